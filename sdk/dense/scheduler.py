"""Batched scheduling: windows x scales x flips x images packed into encoder batches.

The plan lists every *member* (one image at one scale, possibly flipped) and every window of every
member. Windows of equal shape are packed into batches of at most ``max_batch`` across members and
images; ResCLIP's SFR runs per window inside the batch (``DenseEncoder``), so batching changes no
arithmetic. Logits are stitched back with per-pixel counts exactly as the single-window reference path
(``inference.infer_logits``) does.

Whole-image inference of different sizes is bucketed by shape: only identical shapes share a batch.
Nothing is padded to make shapes equal, because padding would change the positional-embedding resize,
the attention over the extra tokens and the SFR grid: the results would no longer be exact.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ..config import DenseConfig
from ..preprocess import preprocess
from .inference import window_logits
from .windows import window_grid

__all__ = ["Member", "plan_members", "run_members", "estimate_window_mb", "max_batch_for_budget"]


@dataclass
class Member:
    """One image at one scale (and flip): its preprocessed tensor and the stitched logits."""

    image: int  # index of the image in the call
    scale: float
    flip: bool
    weight: float  # ensemble weight (scale weight, halved when flip averaging)
    pixels: torch.Tensor  # (3, h, w) normalised, flipped when ``flip``
    logits: torch.Tensor | None = None  # (Q, h, w) after stitching, flipped back; (Q, gh, gw) for one-step
    preds: torch.Tensor | None = None
    count: torch.Tensor | None = None


def plan_members(images: list[np.ndarray], cfg: DenseConfig, patch: int, device) -> list[Member]:
    """Preprocess every image at every scale (and flip). Weights sum to 1 per image."""
    weights = cfg.scale_weights if cfg.scale_weights is not None else (1.0,) * len(cfg.scales)
    total = float(sum(weights)) or 1.0
    members = []
    for i, rgb in enumerate(images):
        for s, w in zip(cfg.scales, weights):
            short, long = int(round(cfg.short_side * s)), int(round(cfg.long_side * s))
            x = torch.from_numpy(preprocess(rgb, short, long, min_side=patch)).to(device)
            flips = (False, True) if cfg.flip else (False,)
            for fl in flips:
                members.append(Member(i, s, fl, w / total / len(flips), x.flip(-1) if fl else x))
    return members


def _tasks(members: list[Member], cfg: DenseConfig):
    """Group (member index, box) by window shape, in plan order."""
    groups: OrderedDict = OrderedDict()
    for mi, m in enumerate(members):
        h, w = m.pixels.shape[-2:]
        boxes = window_grid(h, w, cfg.slide_crop, cfg.slide_stride) if cfg.slide_crop > 0 else [(0, h, 0, w)]
        for box in boxes:
            groups.setdefault((box[1] - box[0], box[3] - box[2]), []).append((mi, box))
    return groups


def run_members(encoder, members: list[Member], text: torch.Tensor, cfg: DenseConfig, max_batch: int,
                progress=None) -> list[Member]:
    """Run every window of every member in shape-bucketed batches and stitch the logits.

    Arguments:
        encoder: ``DenseEncoder``.
        members: from ``plan_members``; their ``logits`` are filled in.
        text: (Q, E) query embeddings.
        max_batch: most windows per encoder call.
        progress: optional tqdm-like object; ``update(n)`` is called with the windows done.

    Returns:
        the members, with ``logits`` (Q, h, w) (grid-sized (Q, gh, gw) for one-step whole-image inference).
    """
    q = text.shape[0]
    one_step = cfg.slide_crop == 0 and cfg.upsample == "one_step"
    for m in members:
        if cfg.slide_crop > 0:
            h, w = m.pixels.shape[-2:]
            m.preds = m.pixels.new_zeros((q, h, w), dtype=torch.float32)
            m.count = m.pixels.new_zeros((1, h, w), dtype=torch.float32)
    for (_, _), tasks in _tasks(members, cfg).items():
        for b0 in range(0, len(tasks), max_batch):
            chunk = tasks[b0 : b0 + max_batch]
            crops = torch.stack([members[mi].pixels[:, y1:y2, x1:x2] for mi, (y1, y2, x1, x2) in chunk])
            with torch.inference_mode():
                if one_step:
                    out = encoder(crops, text).float()
                else:
                    out = window_logits(encoder, crops, text, cfg.pad_crops and cfg.slide_crop > 0).float()
            for k, (mi, (y1, y2, x1, x2)) in enumerate(chunk):
                m = members[mi]
                if cfg.slide_crop > 0:
                    m.preds[:, y1:y2, x1:x2] += out[k]
                    m.count[:, y1:y2, x1:x2] += 1
                else:
                    m.logits = out[k]
            if progress is not None:
                progress.update(len(chunk))
    for m in members:
        if cfg.slide_crop > 0:
            m.logits = m.preds / m.count
            m.preds = m.count = None
        if m.flip:
            m.logits = m.logits.flip(-1)
    return members


def estimate_window_mb(cfg: DenseConfig, encoder, num_queries: int, window_hw: tuple[int, int]) -> float:
    """Rough peak working memory of one window in MiB (fp32): attention maps, activations, crop logits, SFR/PAMR.

    Attention: (heads x N1^2) per map; the last block holds up to ~8 of them (base softmaxes, RCS maps, Omega,
    S_hat). Activations: ~24 x N1 x width. Crop logits and the first-pass PAMR: ~24 x Q x h x w.
    """
    h, w = window_hw
    n1 = 1 + (h // encoder.patch) * (w // encoder.patch)
    width = encoder.visual.conv1.out_channels
    attn = 8 * encoder.heads * n1 * n1
    acts = 24 * n1 * width
    pix = (24 if cfg.sfr else 4) * num_queries * h * w
    return 4.0 * (attn + acts + pix) / 2**20


def max_batch_for_budget(max_memory_mb: float, cfg: DenseConfig, encoder, num_queries: int, window_hw) -> int:
    """Largest batch whose estimated working memory fits the budget (at least 1)."""
    return max(1, int(max_memory_mb // max(estimate_window_mb(cfg, encoder, num_queries, window_hw), 1e-6)))
