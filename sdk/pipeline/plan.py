"""The plan of a call: ensemble members (image x scale x flip), their windows, and batch sizes for a memory budget.

Every member is one image at one scale, possibly flipped, preprocessed once. Its windows (``windows.window_grid``,
or the whole member) are grouped by shape; equal shapes are packed into encoder batches across members and images,
in plan order, so both backends send the same windows together. Whole images of different sizes are never padded
to share a batch: padding would change the positional-embedding resize, the attention and the SFR grid.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import DenseConfig
from ..ops.base import EncoderSpec, HostOps
from ..preprocess import preprocess
from .windows import window_grid


@dataclass
class Member:
    """One image at one scale (and flip): its preprocessed pixels and, once encoded, its stitched logits."""

    image: int  # index of the image in the call
    scale: float
    flip: bool
    weight: float  # ensemble weight (scale weight, halved when flip averaging); weights sum to 1 per image
    pixels: Any  # (3, h, w) normalised, flipped when ``flip`` (the backend's array type)
    logits: Any = None  # (Q, h, w) stitched, flipped back; (Q, gh, gw) for one-step whole-image inference; an
    #                     ``deferred.Upsampled`` grid for two-step whole-image inference on the host kernels
    # Per-member inputs of a method beyond the pixels (none for most methods), passed to ``patch_logits`` by name:
    maps: dict | None = None  # name -> (h, w) float32 map aligned with ``pixels`` (flipped with it): cropped per
    #                           window, and padded with -1 where the window is padded (CorrCLIP's region ids)
    context: dict | None = None  # name -> array of the whole member, the same for each of its windows (RF-CLIP's
    #                               whole-image CLS embedding); set by the backend's ``member_context``


def plan_members(images: list[np.ndarray], cfg: DenseConfig, patch: int, ops: HostOps) -> list[Member]:
    """Preprocess every image at every scale (and flip). Weights sum to 1 per image.

    Arguments:
        images: (H, W, 3) RGB arrays.
        ops: the backend's ``HostOps`` (pixels become its arrays).
    """
    sc = cfg.schedule
    weights = sc.scale_weights if sc.scale_weights is not None else (1.0,) * len(sc.scales)
    total = float(sum(weights)) or 1.0
    flips = (False, True) if sc.flip else (False,)
    members = []
    for i, rgb in enumerate(images):
        for s, w in zip(sc.scales, weights):
            short, long = int(round(sc.short_side * s)), int(round(sc.long_side * s))
            x = ops.from_numpy(preprocess(rgb, short, long, min_side=patch))
            for fl in flips:
                members.append(Member(i, s, fl, w / total / len(flips), ops.flip_w(x) if fl else x))
    return members


def window_tasks(members: list[Member], cfg: DenseConfig) -> OrderedDict:
    """(window h, w) -> [(member index, (y1, y2, x1, x2)), ...], in plan order."""
    sc = cfg.schedule
    groups: OrderedDict = OrderedDict()
    for mi, m in enumerate(members):
        h, w = m.pixels.shape[-2:]
        boxes = window_grid(h, w, sc.slide_crop, sc.slide_stride) if sc.slide_crop > 0 else [(0, h, 0, w)]
        for box in boxes:
            groups.setdefault((box[1] - box[0], box[3] - box[2]), []).append((mi, box))
    return groups


def estimate_window_mb(cfg: DenseConfig, spec: EncoderSpec, num_queries: int, window_hw: tuple[int, int]) -> float:
    """Rough peak working memory of one window in MiB (fp32): attention maps, activations, crop logits, SFR/PAMR.

    Attention: (heads x N1^2) per map; the last block holds up to ~8 of them (base softmaxes, RCS maps, Omega,
    S_hat). Activations: ~24 x N1 x width. Crop logits and the first-pass PAMR: ~24 x Q x h x w. CorrCLIP adds its
    DINO ViT-B/8 (12 heads over 1 + Ld tokens, Ld = (h/8)(w/8): ~3 maps) and its Ld^2 similarity, scope and
    value attention (~4 maps).
    """
    h, w = window_hw
    n1 = 1 + (h // spec.patch) * (w // spec.patch)
    attn = 8 * spec.heads * n1 * n1
    acts = 24 * n1 * spec.width
    pix = (24 if cfg.attention.sfr else 4) * num_queries * h * w
    if cfg.attention.base == "corrclip":
        ld = (h // 8) * (w // 8)
        attn += 3 * 12 * (ld + 1) ** 2 + 4 * ld * ld
    return 4.0 * (attn + acts + pix) / 2**20


def max_batch_for_budget(
    max_memory_mb: float, cfg: DenseConfig, spec: EncoderSpec, num_queries: int, window_hw: tuple[int, int]
) -> int:
    """Largest batch whose estimated working memory fits the budget (at least 1)."""
    return max(1, int(max_memory_mb // max(estimate_window_mb(cfg, spec, num_queries, window_hw), 1e-6)))
