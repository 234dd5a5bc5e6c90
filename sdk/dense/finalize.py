"""From stitched member logits to labels at the original size, in row strips of bounded memory.

Each member's logits (Q, h, w) at its resized size are upsampled bilinearly (align_corners=False) to the
original size (H0, W0), then the ensemble is combined and post-processed (``clipsam.postprocess``):

    prob_mean / weighted :  P = sum_m w_m softmax(logit_scale * L_m)      (weights sum to 1)
    logit_mean           :  P = softmax(logit_scale * sum_m w_m L_m)

A single member reduces to the reference ``postprocess(upsample(L))``, bit for bit while the whole map fits the
strip budget. Beyond it, the upsampling is computed for a strip of output rows at a time (first along the width
for the source rows the strip needs, then the two-row blend; equal to ``F.interpolate`` within ~1e-5), so a
6000 x 4000 image never holds (Q, H0, W0) floats. SCLIP's area rule needs
global argmax counts and then takes a second pass. Output PAMR needs the whole map and disables strips.

On a GPU the post-processing runs there too (``_query_probs_t``, ``_merge_t``, ``_decide_t``, the same arithmetic
as ``clipsam.postprocess`` in torch) and only labels, scores and, when asked, class probabilities cross to the host:
copying (Q, H0, W0) logits to numpy and taking the softmax on one CPU core took most of a GPU call. On the CPU the
numpy functions run, so CPU results stay those of the reference ``postprocess``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DenseConfig
from ..postprocess import finish_strips, merge_synonyms, query_probs, strip_rows
from .pamr import pamr

__all__ = ["upsample_rows", "finalize_members"]


def _source_index(out_size: int, in_size: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    dst = torch.arange(out_size, dtype=torch.float32, device=device)
    src = torch.clamp(scale * (dst + 0.5) - 0.5, min=0.0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = torch.clamp(i0 + 1, max=in_size - 1)
    lam = src - i0.float()
    return i0, i1, lam


def upsample_rows(x: torch.Tensor, out_hw: tuple[int, int], r0: int, r1: int) -> torch.Tensor:
    """Rows [r0, r1) of ``F.interpolate(x[None], out_hw, mode='bilinear', align_corners=False)[0]``.

    Arguments:
        x: (C, h, w).

    Returns:
        (C, r1 - r0, W0).
    """
    h, w = x.shape[-2:]
    i0, i1, lam = _source_index(out_hw[0], h, x.device)
    i0, i1, lam = i0[r0:r1], i1[r0:r1], lam[r0:r1]
    need = torch.unique(torch.cat([i0, i1]))
    cols = F.interpolate(x[None, :, need], size=(need.numel(), out_hw[1]), mode="bilinear", align_corners=False)[0]
    pos = torch.searchsorted(need, torch.stack([i0, i1]))
    lam = lam.view(1, -1, 1).to(x.dtype)
    return (1 - lam) * cols[:, pos[0]] + lam * cols[:, pos[1]]


def finalize_members(logits: list[torch.Tensor], weights: list[float], guides: list[torch.Tensor], out_hw,
                     cfg: DenseConfig, vocab, max_strip_mb: float = 256.0, return_probs: bool = False,
                     on_device: bool | None = None):
    """Labels and scores of one image from its ensemble members.

    Arguments:
        logits: per member (Q, h_m, w_m) float32 logits at the member's resized size (flips undone).
        weights: per member ensemble weight (summing to 1).
        guides: per member (3, h_m, w_m) normalised image (unflipped), used only by output PAMR.
        out_hw: original (H0, W0).
        max_strip_mb: memory for the per-strip float buffers, which sets the strip height.
        on_device: post-process in torch on the logits' device (default: when that is not the CPU) instead of
            in numpy on the host.

    Returns:
        labels (H0, W0) int32, scores (H0, W0) float32, and with ``return_probs`` the renormalised class
        probabilities (C, H0, W0) float32 (needed by SAM2 refinement; C x H0 x W0 floats).
    """
    h0 = out_hw[0]
    if cfg.pamr_iters > 0:  # PAMR needs the whole map: refine each member at full size, then treat it as final
        full = []
        for m, g in zip(logits, guides):
            up = F.interpolate(m[None], size=out_hw, mode="bilinear", align_corners=False)
            guide = F.interpolate(g[None], size=out_hw, mode="bilinear", align_corners=False)
            full.append(pamr(guide, up, cfg.pamr_iters, cfg.pamr_dilations)[0])
        logits = full
    rows = strip_rows(out_hw, len(logits), logits[0].shape[0], vocab.num_classes, max_strip_mb, cfg.pamr_iters > 0)
    whole = rows >= h0  # fits: upsample with F.interpolate itself, bit-identical to the reference path

    def strips():
        for r0 in range(0, h0, rows):
            r1 = min(h0, r0 + rows)
            if cfg.pamr_iters > 0:
                ups = [m[:, r0:r1] for m in logits]
            elif whole:
                ups = [F.interpolate(m[None], size=out_hw, mode="bilinear", align_corners=False)[0] for m in logits]
            else:
                ups = [upsample_rows(m, out_hw, r0, r1) for m in logits]
            yield r0, r1, (_combine_t if on_device else _combine)(ups, weights, cfg, vocab)

    if on_device is None:
        on_device = logits[0].device.type != "cpu"
    if not on_device:
        return finish_strips(strips, out_hw, vocab.num_classes, cfg.prob_thd, cfg.area_thd, return_probs)

    def counts(probs, num_classes):
        return torch.bincount(probs.argmax(dim=0).flatten(), minlength=num_classes).cpu().numpy()

    def decide_strip(probs, prob_thd, keep):  # on the device; only what is returned crosses to the host
        lab, sc, normed = _decide_t(probs, prob_thd, keep)
        return lab.cpu().numpy(), sc.cpu().numpy(), normed.cpu().numpy() if return_probs else None

    return finish_strips(strips, out_hw, vocab.num_classes, cfg.prob_thd, cfg.area_thd, return_probs, counts,
                         decide_strip)


def _query_probs_t(logits: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """``clipsam.postprocess.query_probs`` in torch: softmax over dim 0 of (Q, ...) in float32."""
    return torch.softmax(logits.float() * logit_scale, dim=0)


def _merge_t(probs: torch.Tensor, query_to_class, num_classes: int) -> torch.Tensor:
    """``clipsam.postprocess.merge_synonyms`` in torch: (Q, H, W) -> (C, H, W), max over each class's queries."""
    if len(query_to_class) == num_classes:
        return probs
    q2c = np.asarray(query_to_class)
    return torch.stack([probs[torch.as_tensor(np.flatnonzero(q2c == c), device=probs.device)].amax(dim=0)
                        for c in range(num_classes)])


def _decide_t(probs: torch.Tensor, prob_thd: float, keep: np.ndarray | None):
    """``clipsam.postprocess.decide`` in torch: (C, H, W) -> labels int32, scores float32, renormalised probs."""
    if keep is not None and not keep.all():
        probs = probs * torch.as_tensor(keep, device=probs.device, dtype=probs.dtype)[:, None, None]
    best, labels = probs.max(dim=0)
    labels = torch.where(best < prob_thd, torch.zeros_like(labels), labels)
    probs = probs / probs.sum(dim=0, keepdim=True)
    scores = probs.gather(0, labels[None])[0]
    return labels.int(), scores.float(), probs


def _combine_t(ups: list[torch.Tensor], weights, cfg: DenseConfig, vocab) -> torch.Tensor:
    """``_combine`` on the logits' device: (Q, r, W0) per member -> (C, r, W0) class probabilities."""
    if len(ups) == 1:
        probs = _query_probs_t(ups[0], cfg.logit_scale)
    elif cfg.combine == "logit_mean":
        probs = _query_probs_t(sum(w * u for u, w in zip(ups, weights)), cfg.logit_scale)
    else:
        probs = sum(w * _query_probs_t(u, cfg.logit_scale) for u, w in zip(ups, weights))
    return _merge_t(probs, vocab.query_to_class, vocab.num_classes)


def _combine(ups: list[torch.Tensor], weights, cfg: DenseConfig, vocab) -> np.ndarray:
    """Members' logits for the same pixels (Q, r, W0) each -> combined class probabilities (C, r, W0)."""
    if len(ups) == 1:
        probs = query_probs(ups[0].cpu().numpy(), cfg.logit_scale)
    elif cfg.combine == "logit_mean":
        probs = query_probs(sum(w * u for u, w in zip(ups, weights)).cpu().numpy(), cfg.logit_scale)
    else:
        probs = sum(np.float32(w) * query_probs(u.cpu().numpy(), cfg.logit_scale) for u, w in zip(ups, weights))
    return merge_synonyms(probs, vocab.query_to_class, vocab.num_classes)
