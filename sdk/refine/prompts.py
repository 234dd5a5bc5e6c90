"""Turn a dense CLIP label map into SAM2 prompts: interior points (and optional boxes) per confident region.

Backend-independent: numpy + OpenCV only (no torch), shared by the PyTorch and ONNX Runtime SAM2 backends.

For every refined class ``c`` (``RefineConfig.refines``), the confident mask ``(labels == c) & (p_c >=
min_confidence)`` is split into 8-connected regions; regions below ``min_region_frac * H * W`` pixels
are dropped. Each kept region gives one prompt:

- First positive point: the maximum of the region's L2 distance transform (OpenCV, 5x5 mask, computed
  with everything outside the region, the image border included, as background), first in raster
  order on ties. It is the "most interior" pixel, so it lies inside the region even when the region is
  not convex (a centroid may not).
- Extra positive points (large regions only: one more per ``area_per_point_frac * H * W`` pixels, at
  most ``points_per_region`` in all): farthest-point sampling over the region pixels whose distance to
  the edge is at least ``interior_frac`` times the maximum, so they stay away from the boundary.
- Negative points (``negative_points``): the first points of the nearest regions of *other* classes
  (any class, refined or not), nearest first.

Everything is deterministic (exact integer distances in the sampling, raster-order tie-breaks); nothing
is random. Coordinates are pixel indices ``(x, y) = (column, row)``, the convention of
``SAM2ImagePredictor.predict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InvalidInputError, InvalidTypeError
from .config import RefineConfig


@dataclass(frozen=True, eq=False)
class PromptSet:
    """The prompts of one image, P prompts with K point slots each (arrays, ready to batch).

    Attributes:
      point_coords (np.ndarray): float32 [P, K, 2], pixel (x, y); padding slots hold (0, 0).
      point_labels (np.ndarray): int32 [P, K]; 1 positive, 0 negative, -1 padding.
      boxes (np.ndarray or None): float32 [P, 4] xyxy with inclusive pixel indices, or None.
      class_ids (np.ndarray): int64 [P], the class each prompt refines.
      confidences (np.ndarray): float32 [P], mean class probability inside the region.
      areas (np.ndarray): int64 [P], region size in pixels.
      region_map (np.ndarray): int32 [H, W]; ``p`` on the pixels of prompt ``p``'s region, -1 elsewhere
        (regions never overlap). ``region_masks()`` expands it to bool [P, H, W].
    """

    point_coords: np.ndarray
    point_labels: np.ndarray
    boxes: np.ndarray | None
    class_ids: np.ndarray
    confidences: np.ndarray
    areas: np.ndarray
    region_map: np.ndarray

    def __post_init__(self) -> None:
        p = len(self.class_ids)
        if self.point_coords.ndim != 3 or self.point_coords.shape[0] != p or self.point_coords.shape[2] != 2:
            raise InvalidInputError(f"point_coords must be [P={p}, K, 2], got {self.point_coords.shape}")
        if self.point_labels.shape != self.point_coords.shape[:2]:
            raise InvalidInputError(
                f"point_labels must be {self.point_coords.shape[:2]}, got {self.point_labels.shape}"
            )
        if self.boxes is not None and self.boxes.shape != (p, 4):
            raise InvalidInputError(f"boxes must be [P={p}, 4], got {self.boxes.shape}")
        if self.confidences.shape != (p,) or self.areas.shape != (p,) or self.region_map.ndim != 2:
            raise InvalidInputError("confidences/areas must be [P] and region_map [H, W]")

    def __len__(self) -> int:
        return len(self.class_ids)

    def __repr__(self) -> str:
        k = self.point_coords.shape[1]
        return (
            f"PromptSet(P={len(self)}, K={k}, image_size={self.image_size}, "
            f"boxes={self.boxes is not None}, class_ids={self.class_ids.tolist()})"
        )

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the image the prompts were extracted from."""
        return self.region_map.shape[0], self.region_map.shape[1]

    def region_masks(self) -> np.ndarray:
        """bool [P, H, W]: the region each prompt was taken from."""
        return self.region_map[None] == np.arange(len(self), dtype=np.int32)[:, None, None]


@dataclass
class _Region:
    class_id: int
    area: int
    bbox: tuple[int, int, int, int]  # x, y, w, h
    sub: np.ndarray  # bool [h, w] crop of the region
    dist: np.ndarray  # float32 [h, w] distance to the nearest non-region pixel
    anchor: tuple[int, int]  # (x, y) of the first point, global
    confidence: float

    @property
    def key(self) -> tuple[int, int]:  # raster position of the anchor: unique, since regions are disjoint
        return self.anchor[1], self.anchor[0]


def _check_inputs(labels: np.ndarray, probs: np.ndarray) -> None:
    if not isinstance(labels, np.ndarray) or not isinstance(probs, np.ndarray):
        raise InvalidTypeError("labels and probs must be numpy arrays")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidTypeError(f"labels must be an integer array [H, W], got dtype {labels.dtype}")
    if labels.ndim != 2 or labels.size == 0:
        raise InvalidInputError(f"labels must be a non-empty [H, W] array, got shape {labels.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise InvalidTypeError(f"probs must be a float array, got dtype {probs.dtype}")
    if probs.shape[-2:] != labels.shape or probs.ndim not in (2, 3):
        raise InvalidInputError(f"probs must be [C, H, W] or [H, W] with (H, W) = {labels.shape}, got {probs.shape}")
    if not np.isfinite(probs).all():
        raise InvalidInputError("probs contains NaN or inf")
    if probs.ndim == 3 and labels.max() >= probs.shape[0]:
        raise InvalidInputError(f"labels has class {labels.max()}, probs only {probs.shape[0]} classes")


def _regions_of_class(c: int, mask: np.ndarray, prob: np.ndarray, min_area: int) -> list[_Region]:
    """The 8-connected regions of ``mask`` (bool [H, W]) with at least ``min_area`` pixels."""
    n, cc, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    out = []
    for i in np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_area) + 1:
        x, y, w, h, area = (int(v) for v in stats[i])
        sub = cc[y : y + h, x : x + w] == i
        # Pad with background so the image border counts as an edge: points stay off the border too.
        dist = cv2.distanceTransform(np.pad(sub, 1).view(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
        ay, ax = np.unravel_index(int(np.argmax(dist)), dist.shape)  # argmax: first in raster order
        conf = float(prob[y : y + h, x : x + w][sub].mean(dtype=np.float64))
        out.append(_Region(c, area, (x, y, w, h), sub, dist, (x + int(ax), y + int(ay)), conf))
    return out


def _positive_points(r: _Region, n_points: int, interior_frac: float) -> np.ndarray:
    """int64 [n <= n_points, 2] (x, y): the anchor, then farthest-point samples among interior pixels."""
    x0, y0 = r.bbox[:2]
    first = np.array([r.anchor], dtype=np.int64)
    if n_points == 1:
        return first
    ys, xs = np.nonzero(r.dist >= interior_frac * float(r.dist.max()))  # raster order, region pixels only
    cand = np.stack([xs + x0, ys + y0], axis=1).astype(np.int64)
    chosen = [first[0]]
    d2 = ((cand - first[0]) ** 2).sum(axis=1)  # exact integer squared distances
    while len(chosen) < n_points:
        j = int(np.argmax(d2))
        if d2[j] == 0:  # every candidate is already chosen
            break
        chosen.append(cand[j])
        d2 = np.minimum(d2, ((cand - cand[j]) ** 2).sum(axis=1))
    return np.stack(chosen)


def _negative_points(r: _Region, others: list[_Region], shape: tuple[int, int], n: int) -> np.ndarray:
    """int64 [<= n, 2] (x, y): anchors of the other-class regions nearest to region ``r``."""
    cands = [o for o in others if o.class_id != r.class_id]
    if n == 0 or not cands:
        return np.zeros((0, 2), np.int64)
    outside = np.ones(shape, np.uint8)
    x, y, w, h = r.bbox
    outside[y : y + h, x : x + w][r.sub] = 0
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)  # distance to region r
    anchors = np.array([o.anchor for o in cands], dtype=np.int64)
    d = dist[anchors[:, 1], anchors[:, 0]]
    order = np.lexsort((anchors[:, 0], anchors[:, 1], d))  # nearest first, then raster order
    return anchors[order[:n]]


def extract_prompts(labels: np.ndarray, probs: np.ndarray, config: RefineConfig | None = None) -> PromptSet:
    """Extract SAM2 prompts from a dense label map (see the module docstring for the algorithm).

    Arguments:
      labels (np.ndarray): int [H, W] dense class map; negative values are void and never prompted.
      probs (np.ndarray): float [C, H, W] probability of each class, or [H, W] score of the labelled class.
      config (RefineConfig or None): thresholds and filters; None uses the defaults.

    Returns:
      (PromptSet): P prompts sorted by class, then area descending (ties: raster order of the first
        point). With more than ``max_prompts_per_image`` regions, the largest are kept.
    """
    config = RefineConfig() if config is None else config
    _check_inputs(labels, probs)
    h, w = labels.shape
    min_area = max(1, int(np.ceil(config.min_region_frac * h * w - 1e-9)))
    present = [int(c) for c in np.unique(labels) if c >= 0]
    wanted = [c for c in present if config.refines(c)]
    regions: list[_Region] = []
    for c in present if config.negative_points else wanted:
        prob = probs[c] if probs.ndim == 3 else probs
        mask = (labels == c) & (prob >= config.min_confidence)
        regions += _regions_of_class(c, mask, prob, min_area)

    prompts = [r for r in regions if config.refines(r.class_id)]
    prompts = sorted(prompts, key=lambda r: (-r.area, r.class_id, r.key))[: config.max_prompts_per_image]
    prompts.sort(key=lambda r: (r.class_id, -r.area, r.key))

    p, k = len(prompts), config.num_points
    coords = np.zeros((p, k, 2), np.float32)
    point_labels = np.full((p, k), -1, np.int32)
    region_map = np.full((h, w), -1, np.int32)
    area_per_point = config.area_per_point_frac * h * w
    for i, r in enumerate(prompts):
        n_pos = min(config.points_per_region, 1 + int(r.area // area_per_point))
        pos = _positive_points(r, n_pos, config.interior_frac)
        neg = (
            _negative_points(r, regions, (h, w), config.negatives_per_region)
            if config.negative_points
            else np.zeros((0, 2), np.int64)
        )
        pts = np.concatenate([pos, neg])
        coords[i, : len(pts)] = pts
        point_labels[i, : len(pos)] = 1
        point_labels[i, len(pos) : len(pts)] = 0
        x, y, bw, bh = r.bbox
        region_map[y : y + bh, x : x + bw][r.sub] = i

    boxes = None
    if config.use_boxes:
        bb = np.array([r.bbox for r in prompts], dtype=np.float32).reshape(p, 4)
        boxes = np.stack([bb[:, 0], bb[:, 1], bb[:, 0] + bb[:, 2] - 1, bb[:, 1] + bb[:, 3] - 1], axis=1)
    return PromptSet(
        point_coords=coords,
        point_labels=point_labels,
        boxes=boxes,
        class_ids=np.array([r.class_id for r in prompts], dtype=np.int64),
        confidences=np.array([r.confidence for r in prompts], dtype=np.float32),
        areas=np.array([r.area for r in prompts], dtype=np.int64),
        region_map=region_map,
    )
