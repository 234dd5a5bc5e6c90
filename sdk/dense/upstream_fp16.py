"""``precision="fp16-upstream"``: the fp16 casts of CorrCLIP's and RF-CLIP's upstream code, on copies of the models.

Both upstreams run their models in fp16 on CUDA (``docs/algorithms.md`` sections 15.7 and 16.8):

    CLIP  CorrCLIP: open_clip ``create_model(..., precision="fp16")``; RF-CLIP: OpenAI ``clip.load`` on CUDA. Both cast
          the same tensors: conv / linear weights and biases, the attention's packed in-projection, the visual ``proj``
          and the ``text_projection`` to fp16; LayerNorm parameters, ``class_embedding``, ``positional_embedding`` and
          ``token_embedding`` stay fp32, and every LayerNorm computes in fp32 and casts its result back to the input's
          dtype (open_clip's ``LayerNormFp32``, OpenAI's ``LayerNorm`` subclass). Activations are fp16 throughout.
    DINO  CorrCLIP: ``.half()`` on everything (LayerNorm parameters and ``pos_embed`` included); input ``.half()``.

``half_clip`` and ``half_dino`` cast deep copies, so a model the caller still holds is never changed.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm on float32 parameters computed in float32, the result cast back to the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


def _fp32_layer_norm(ln: nn.LayerNorm) -> Fp32LayerNorm:
    new = Fp32LayerNorm(ln.normalized_shape, eps=ln.eps, elementwise_affine=ln.elementwise_affine)
    new.load_state_dict({k: v.float() for k, v in ln.state_dict().items()})
    return new if ln.weight is None else new.to(ln.weight.device)


def _half(param: torch.Tensor | None) -> None:
    if param is not None:
        param.data = param.data.half()


def half_clip(model: nn.Module) -> nn.Module:
    """A copy of an open_clip CLIP model cast as both upstreams cast CLIP for fp16 (module docstring); eval mode."""
    model = copy.deepcopy(model)
    norms = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.LayerNorm)]
    for name, ln in norms:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _fp32_layer_norm(ln))
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            _half(module.weight)
            _half(module.bias)
        if isinstance(module, nn.MultiheadAttention):
            for attr in ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                _half(getattr(module, attr, None))
            _half(module.bias_k)
            _half(module.bias_v)
        for attr in ("proj", "text_projection"):  # projections kept as bare parameters
            p = getattr(module, attr, None)
            if isinstance(p, nn.Parameter):
                _half(p)
    return model.eval()


def half_dino(model: nn.Module) -> nn.Module:
    """A copy of CorrCLIP's DINO with every parameter and buffer in fp16 (upstream's ``.half()``); eval mode."""
    return copy.deepcopy(model).half().eval()
