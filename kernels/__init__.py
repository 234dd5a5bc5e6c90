"""clipsam.kernels: fused attention and SFR kernels, each with a same-signature PyTorch reference.

``rcs_attention`` and ``sfr_affinity`` are the entry points the SDK calls: they run the Triton kernel on
CUDA when triton imports and the inputs are supported, and the reference (``*_ref``) otherwise; the
references are also the CPU path, the ONNX export path and the numerical ground truth of the kernels.
Dispatch rules (``CLIPSAM_DISABLE_TRITON``, ``CLIPSAM_TRITON``, ``force=``) are in ``_dispatch``;
``exportable()`` forces the references, for ``torch.onnx.export``. Importing this package never fails
for want of triton.
"""

from ._dispatch import exportable, triton_available
from .rcs_attention import rcs_attention, rcs_attention_ref, rcs_attention_triton
from .sfr_affinity import sfr_affinity, sfr_affinity_ref, sfr_affinity_triton

__all__ = [
    "exportable",
    "rcs_attention",
    "rcs_attention_ref",
    "rcs_attention_triton",
    "sfr_affinity",
    "sfr_affinity_ref",
    "sfr_affinity_triton",
    "triton_available",
]
