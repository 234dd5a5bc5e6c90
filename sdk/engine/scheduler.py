"""Scheduling for the exported dense encoder (numpy twin of ``clipsam.dense.scheduler``) and its shape profiles.

The plan lists every *member* (one image at one scale, possibly flipped) and every window of every member; windows
of equal shape are packed into batches of at most ``max_batch`` across members and images, in plan order, exactly
as the PyTorch scheduler does (so the same windows meet in the same batches). ClearCLIP pads each crop to a patch
multiple. The same rules give the min/opt/max shapes of TensorRT profiles (``batch_sizes``, ``crop_sizes``): the
engines are built for the batches the runtime sends.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..config import DenseConfig
from ..dense.windows import pad_to_patch, window_grid
from ..preprocess import preprocess, resize_shape

__all__ = ["Member", "plan_members", "window_tasks", "estimate_window_mb", "max_batch_for_budget", "batch_sizes",
           "crop_sizes", "TYPICAL_ASPECT"]

TYPICAL_ASPECT = 4 / 3  # the "opt" profile shape: a landscape 4:3 photo


@dataclass
class Member:
    """One image at one scale (and flip): its preprocessed array and, after ``run_members``, its logits."""

    image: int  # index of the image in the call
    scale: float
    flip: bool
    weight: float  # ensemble weight (scale weight, halved when flip averaging); weights sum to 1 per image
    pixels: np.ndarray  # (3, h, w) normalised, flipped when ``flip``
    logits: np.ndarray | None = None  # (Q, h, w) stitched, flipped back; (Q, gh, gw) for one-step whole image


def plan_members(images: list[np.ndarray], cfg: DenseConfig, patch: int) -> list[Member]:
    """Preprocess every image at every scale (and flip), as ``clipsam.dense.scheduler.plan_members``."""
    weights = cfg.scale_weights if cfg.scale_weights is not None else (1.0,) * len(cfg.scales)
    total = float(sum(weights)) or 1.0
    members = []
    for i, rgb in enumerate(images):
        for s, w in zip(cfg.scales, weights):
            short, long = int(round(cfg.short_side * s)), int(round(cfg.long_side * s))
            x = preprocess(rgb, short, long, min_side=patch)
            flips = (False, True) if cfg.flip else (False,)
            for fl in flips:
                members.append(Member(i, s, fl, w / total / len(flips), np.ascontiguousarray(x[..., ::-1]) if fl else x))
    return members


def window_tasks(members: list[Member], cfg: DenseConfig) -> OrderedDict:
    """(window h, w) -> [(member index, (y1, y2, x1, x2)), ...], in plan order."""
    groups: OrderedDict = OrderedDict()
    for mi, m in enumerate(members):
        h, w = m.pixels.shape[-2:]
        boxes = window_grid(h, w, cfg.slide_crop, cfg.slide_stride) if cfg.slide_crop > 0 else [(0, h, 0, w)]
        for box in boxes:
            groups.setdefault((box[1] - box[0], box[3] - box[2]), []).append((mi, box))
    return groups


def estimate_window_mb(cfg: DenseConfig, clip: dict, num_queries: int, window_hw: tuple[int, int]) -> float:
    """Rough peak working memory of one window in MiB (the PyTorch scheduler's estimate, from the manifest)."""
    h, w = window_hw
    n1 = 1 + (h // clip["patch"]) * (w // clip["patch"])
    attn = 8 * clip["heads"] * n1 * n1
    acts = 24 * n1 * clip["width"]
    pix = (24 if cfg.sfr else 4) * num_queries * h * w
    return 4.0 * (attn + acts + pix) / 2**20


def max_batch_for_budget(max_memory_mb: float, cfg: DenseConfig, clip: dict, num_queries: int, window_hw) -> int:
    """Largest batch whose estimated working memory fits the budget (at least 1)."""
    return max(1, int(max_memory_mb // max(estimate_window_mb(cfg, clip, num_queries, window_hw), 1e-6)))


# ---- TensorRT profiles ------------------------------------------------------------------------------------
def _typical(cfg: DenseConfig) -> tuple[int, int]:
    return resize_shape(cfg.short_side, int(round(cfg.short_side * TYPICAL_ASPECT)), cfg.short_side, cfg.long_side)


def batch_sizes(cfg: DenseConfig, max_batch: int) -> tuple[int, int, int]:
    """(min, opt, max) windows per encoder call: opt = the windows of one typical 4:3 image (x flips), capped.

    Whole-image windows batch only across images (and flips) of identical size, so their opt is 1 (x flips).
    """
    h, w = _typical(cfg)
    n = len(window_grid(h, w, cfg.slide_crop, cfg.slide_stride)) if cfg.slide_crop > 0 else 1
    n *= 2 if cfg.flip else 1
    return 1, max(1, min(n, max_batch)), max_batch


def crop_sizes(cfg: DenseConfig, patch: int, max_side: int):
    """(min, opt, max) encoder input (H, W): one patch .. a full (padded) crop, or .. ``max_side`` (whole image)."""
    if cfg.slide_crop > 0:
        c = cfg.slide_crop
        full = c + sum(pad_to_patch(c, c, patch)[:2]) if cfg.pad_crops else c
        return (patch, patch), (c, c), (full, full)
    return (patch, patch), _typical(cfg), (max_side, max_side)
