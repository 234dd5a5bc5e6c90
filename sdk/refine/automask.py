"""SAM2 automatic masks (the ``sam2`` package's ``SAM2AutomaticMaskGenerator`` with one crop), batched, numpy only.

    image -> embedding (the refiner's ``embed_images``, shared with refinement)
    point grid (n x n, x fastest, offsets 1/2n) scaled to the image
    per batch of points: ONE prompt-encoder + mask-decoder call (``point_logits``), logits at the image size
    keep predicted IoU > t_iou, stability #(logit > off) / #(logit > -off) >= t_stab, binarise at 0, boxes
    NMS over all kept masks (box IoU > t_nms suppressed, descending IoU)
    instance map: masks painted by ascending area (``clipsam.masks.paint_masks``)

CorrCLIP (``docs/algorithms.md`` section 16.2) uses it with 8 points per side, both thresholds 0.4 and one mask per
point. A backend implements ``point_logits(embedding, points, multimask, chunk)``; ``clipsam.refine.sam2_backend``
does it for PyTorch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..masks import paint_masks


@dataclass(frozen=True)
class AutoMaskSettings:
    """The generator's settings (``sam2`` names); defaults are CorrCLIP's (the others are ``sam2``'s defaults)."""

    points_per_side: int = 8
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.4
    stability_score_thresh: float = 0.4
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    multimask: bool = False
    paint_order: str = "ascending_area"

    @classmethod
    def from_config(cls, corr) -> AutoMaskSettings:
        """From ``DenseConfig.corrclip``."""
        return cls(
            corr.corr_amg_points_per_side,
            corr.corr_amg_points_per_batch,
            corr.corr_amg_pred_iou_thresh,
            corr.corr_amg_stability_thresh,
            corr.corr_amg_stability_offset,
            corr.corr_amg_box_nms_thresh,
            corr.corr_amg_multimask,
            corr.corr_paint_order,
        )


def point_grid(n: int) -> np.ndarray:
    """(n * n, 2) points in [0, 1]: offsets 1/2n + k/n, x varying fastest (``sam2.utils.amg.build_point_grid``)."""
    side = np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    return np.stack([np.tile(side[None, :], (n, 1)), np.tile(side[:, None], (1, n))], axis=-1).reshape(-1, 2)


def stability_scores(logits: np.ndarray, offset: float, threshold: float = 0.0) -> np.ndarray:
    """(M, H, W) logits -> (M,) float32 #(logit > threshold + offset) / #(logit > threshold - offset) (NaN for 0/0)."""
    inter = (logits > threshold + offset).reshape(len(logits), -1).sum(1)
    union = (logits > threshold - offset).reshape(len(logits), -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter.astype(np.float32) / union.astype(np.float32)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(M, H, W) bool -> (M, 4) int64 boxes x0, y0, x1, y1 with inclusive maxima; [0, 0, 0, 0] for an empty mask."""
    out = np.zeros((len(masks), 4), np.int64)
    for i, m in enumerate(masks):
        rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        if len(rows):
            out[i] = cols[0], rows[0], cols[-1], rows[-1]
    return out


def box_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS as torchvision's CPU kernel: boxes by descending score (stable on ties), a box is suppressed when its
    IoU (float32, areas (x1 - x0)(y1 - y0)) with a kept box is > threshold. Returns kept indices in that order."""
    b = boxes.astype(np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    suppressed = np.zeros(len(b), bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1 :]
        w = np.maximum(np.float32(0), np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]))
        h = np.maximum(np.float32(0), np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]))
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / (area[i] + area[rest] - inter)
        suppressed[rest[iou.astype(np.float64) > threshold]] = True
    return np.asarray(keep, np.int64)


class AutoMaskGenerator:
    """Automatic masks over a SAM2 refiner's model (one SAM2 per Segmenter).

    Arguments:
        refiner: a SAM2 backend with ``embed_images`` and ``point_logits`` (``Sam2Refiner``).
        settings: the generator's settings.
    """

    def __init__(self, refiner: Any, settings: AutoMaskSettings):
        self.refiner = refiner
        self.settings = settings
        self.decoder_calls = 0
        self.seconds = 0.0  # time spent in generate(), encoder included (benchmarks)

    def masks(self, embedding: Any, hw: tuple[int, int], per_point: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks (M, H, W) and predicted IoUs (M,) of one image, in NMS order (descending IoU).

        ``per_point``: one decoder call per point instead of one per batch of points (the baseline of the
        benchmark; same masks).
        """
        s = self.settings
        h, w = hw
        points = point_grid(s.points_per_side) * np.array([w, h], dtype=np.float64)
        kept_masks, kept_iou = [], []
        step = 1 if per_point else s.points_per_batch
        for b0 in range(0, len(points), step):
            for logits, iou in self.refiner.point_logits(embedding, points[b0 : b0 + step], s.multimask):
                keep = np.ones(len(iou), bool)
                if s.pred_iou_thresh > 0:
                    keep &= iou > np.float32(s.pred_iou_thresh)
                if s.stability_score_thresh > 0:
                    stab = stability_scores(logits, s.stability_score_offset)
                    keep &= stab >= np.float32(s.stability_score_thresh)
                kept_masks.append(logits[keep] > 0.0)
                kept_iou.append(iou[keep])
            self.decoder_calls += 1
        masks = np.concatenate(kept_masks) if kept_masks else np.zeros((0, h, w), bool)
        iou = np.concatenate(kept_iou) if kept_iou else np.zeros(0, np.float32)
        order = box_nms(masks_to_boxes(masks), iou, s.box_nms_thresh)
        return masks[order], iou[order]

    def generate(
        self, images: Sequence[np.ndarray], embeddings: Sequence[Any] | None = None, per_point: bool = False
    ) -> list[tuple[np.ndarray, Any]]:
        """Per RGB uint8 image its (H, W) int32 instance map and its SAM2 embedding (``embeddings``: the refiner's,
        when already computed; refinement reuses those returned)."""
        t0 = time.perf_counter()
        if embeddings is None:
            embeddings = self.refiner.embed_images(list(images))
        out = [
            (paint_masks(self.masks(e, im.shape[:2], per_point)[0], self.settings.paint_order), e)
            for e, im in zip(embeddings, images)
        ]
        self.seconds += time.perf_counter() - t0
        return out
