"""Whole-image and sliding-window inference, stitched to the original size (ALGORITHMS.md A.3-A.5).

This is the reference path: one window of one image at a time, exactly as upstream (geometry in
``windows.py``). Window logits (upsampled to the window) are summed and divided by the per-pixel count (logit space).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import DenseConfig
from .pamr import pamr
from .windows import pad_to_patch, window_grid

__all__ = ["window_grid", "pad_to_patch", "window_logits", "infer_logits"]


def window_logits(encoder, crops: torch.Tensor, text: torch.Tensor, pad: bool) -> torch.Tensor:
    """Logits of equally sized crops (B,3,h,w), upsampled to the crop size: (B, Q, h, w)."""
    h, w = crops.shape[-2:]
    if pad:
        l, r, t, b = pad_to_patch(h, w, encoder.patch)
        if l or r or t or b:
            padded = F.pad(crops, (l, r, t, b))
            out = F.interpolate(encoder(padded, text), size=padded.shape[-2:], mode="bilinear", align_corners=False)
            return out[:, :, t : t + h, l : l + w]
    return F.interpolate(encoder(crops, text), size=(h, w), mode="bilinear", align_corners=False)


def infer_logits(encoder, image: torch.Tensor, text: torch.Tensor, cfg: DenseConfig, ori_hw: tuple[int, int]) -> torch.Tensor:
    """Logits of one preprocessed image at its original size.

    Arguments:
        encoder: ``DenseEncoder``.
        image: (3, h, w) normalised image at the resized size.
        text: (Q, E) query embeddings.
        ori_hw: (H0, W0) original image size.

    Returns:
        (Q, H0, W0) float32 logits (after the optional PAMR).
    """
    img = image.unsqueeze(0)
    h, w = img.shape[-2:]
    if cfg.slide_crop > 0:
        q = text.shape[0]
        preds = img.new_zeros((1, q, h, w))
        count = img.new_zeros((1, 1, h, w))
        for y1, y2, x1, x2 in window_grid(h, w, cfg.slide_crop, cfg.slide_stride):
            preds[:, :, y1:y2, x1:x2] += window_logits(encoder, img[:, :, y1:y2, x1:x2], text, cfg.pad_crops).float()
            count[:, :, y1:y2, x1:x2] += 1
        logits = preds / count
    elif cfg.upsample == "one_step":
        logits = encoder(img, text).float()
    else:
        logits = window_logits(encoder, img, text, False).float()
    logits = F.interpolate(logits, size=ori_hw, mode="bilinear", align_corners=False)
    if cfg.pamr_iters > 0:
        guide = F.interpolate(img, size=ori_hw, mode="bilinear", align_corners=False)
        logits = pamr(guide, logits, cfg.pamr_iters, cfg.pamr_dilations)
    return logits[0]
