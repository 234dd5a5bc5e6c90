"""SFR host steps between ResCLIP's two passes: first-pass probabilities to patch labels (ALGORITHMS.md C.3-C.4).

    probs  = softmax(logit_scale * PAMR(logits at crop size))      over queries
    label  = argmax query per pixel; pixels with max prob < temp_thd -> query 0
    L[p]   = mode of the labels of the p x p pixels of patch p (ties -> smallest label); the remainder
             rows/columns beyond the last whole patch are dropped (upstream ``unfold``)

The mode is computed with one scatter-add of counts per (patch, query), vectorised over the batch.
"""

from __future__ import annotations

import torch

from .pamr import pamr

__all__ = ["first_pass_probs", "patch_labels"]


def first_pass_probs(logits: torch.Tensor, crops: torch.Tensor, logit_scale: float, pamr_iters: int, pamr_dilations) -> torch.Tensor:
    """Probabilities of the SFR first pass.

    Arguments:
        logits: (B, Q, H, W) first-pass logits at crop size.
        crops: (B, 3, H, W) normalised crops.

    Returns:
        (B, Q, H, W) softmax(logit_scale * PAMR(logits)) over Q.
    """
    refined = pamr(crops, logits, pamr_iters, pamr_dilations) if pamr_iters > 0 else logits
    return torch.softmax(refined.to(logits.dtype) * logit_scale, dim=1)


def patch_labels(probs: torch.Tensor, patch: int, temp_thd: float) -> torch.Tensor:
    """Per-patch majority query.

    Arguments:
        probs: (B, Q, H, W) first-pass probabilities.
        patch: patch size p.
        temp_thd: confidence threshold; pixels below it are assigned query 0.

    Returns:
        (B, H // p, W // p) int64 labels.
    """
    b, q, h, w = probs.shape
    gh, gw = h // patch, w // patch
    conf, pred = probs.amax(dim=1), probs.argmax(dim=1)  # (B, H, W)
    pred = torch.where(conf < temp_thd, torch.zeros_like(pred), pred)
    pred = pred[:, : gh * patch, : gw * patch]
    blocks = pred.reshape(b, gh, patch, gw, patch).permute(0, 1, 3, 2, 4).reshape(b, gh * gw, patch * patch)
    counts = torch.zeros(b, gh * gw, q, dtype=torch.int32, device=probs.device)
    counts.scatter_add_(2, blocks, torch.ones_like(blocks, dtype=torch.int32))
    return counts.argmax(dim=2).reshape(b, gh, gw)  # argmax returns the first max: smallest label on ties
