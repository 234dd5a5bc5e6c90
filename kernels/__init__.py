"""clipsam.kernels: fused attention, SFR and PAMR kernels, each with a same-signature PyTorch reference.

``rcs_attention``, ``sfr_affinity`` and ``pamr`` are the entry points the SDK calls: they run the Triton kernel on
CUDA when triton imports and the inputs are supported, and the reference (``*_ref``) otherwise; the
references are also the CPU path, the ONNX export path and the numerical ground truth of the kernels.
Dispatch rules (``CLIPSAM_DISABLE_TRITON``, ``CLIPSAM_TRITON``, ``force=``) are in ``_dispatch``;
``exportable()`` forces the references, for ``torch.onnx.export``. Importing this package never fails
for want of triton.
"""

from ._dispatch import exportable, triton_available
from .pamr import pamr, pamr_ref, pamr_triton
from .rcs_attention import rcs_attention, rcs_attention_ref, rcs_attention_triton, rcs_mean_maps
from .sfr_affinity import sfr_affinity, sfr_affinity_ref, sfr_affinity_triton

__all__ = [
    "exportable",
    "pamr",
    "pamr_ref",
    "pamr_triton",
    "rcs_attention",
    "rcs_attention_ref",
    "rcs_attention_triton",
    "rcs_mean_maps",
    "sfr_affinity",
    "sfr_affinity_ref",
    "sfr_affinity_triton",
    "triton_available",
]
