"""Merge SAM2 masks back into the dense CLIP label map, plus COCO RLE encoding of the resulting instances.

Backend-independent: numpy only (no torch). The rules, applied in order:

1. **Score.** Mask ``p`` takes the class of its prompt, ``c = prompts.class_ids[p]``, and the score
   ``mask_scores[p] * mean(P(c) inside mask p)``, so SAM2's confidence is discounted where CLIP does not
   see the class. Empty masks and masks scoring below ``min_mask_score`` are dropped.
2. **Same-class duplicates.** Masks of one class whose IoU exceeds ``dedup_iou`` are merged,
   transitively (connected groups of the "IoU > dedup_iou" graph): the union of the masks, the maximum
   score. ``dedup_iou = 1`` disables merging.
3. **Overlaps: the higher score wins.** A pixel covered by accepted masks of different classes goes to
   the highest-scoring one (ties: the instance first in the output order: score descending, then class,
   then prompt index). The refined label map takes that mask's class. The losing instance's mask loses the
   pixel; instances of the *same* class may overlap (as COCO instances do). An instance left with no
   pixel is dropped.
4. **Uncovered pixels keep the dense label.** Only pixels under an accepted mask change.

Everything is vectorised over pixels; Python loops run over masks only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInputError, InvalidTypeError
from .config import RefineConfig
from .prompts import PromptSet


def mask_to_rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE of a bool [H, W] mask: ``{"size": [H, W], "counts": [...]}``.

    Counts are run lengths in column-major (Fortran) order, alternating 0-runs and 1-runs and starting
    with a 0-run (of length 0 when the first pixel is set), as ``pycocotools`` expects.
    """
    if mask.ndim != 2:
        raise InvalidInputError(f"mask must be [H, W], got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": []}
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], edges, [flat.size]]))
    if flat[0]:
        counts = np.concatenate([[0], counts])
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode an uncompressed COCO RLE (see ``mask_to_rle``) to a bool [H, W] mask."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = np.asarray(rle["counts"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInputError(f"not an uncompressed COCO RLE dict with 'size' and 'counts': {e}") from e
    if counts.ndim != 1 or (counts < 0).any() or int(counts.sum()) != h * w:
        raise InvalidInputError(f"RLE counts must be non-negative and sum to H*W = {h * w}")
    values = (np.arange(len(counts)) % 2).astype(bool)
    return np.repeat(values, counts).reshape((h, w), order="F")


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """xyxy with inclusive pixel indices of a non-empty bool [H, W] mask."""
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return float(xs[0]), float(ys[0]), float(xs[-1]), float(ys[-1])


@dataclass(frozen=True, eq=False)
class Instance:
    """One refined object.

    Attributes:
      mask (np.ndarray): bool [H, W].
      class_id (int): class index (the prompt's class).
      score (float): SAM2 score times mean CLIP probability (max over merged duplicates).
      box (tuple): (x0, y0, x1, y1), inclusive pixel indices of the mask's extent.
      area (int): number of mask pixels.
      prompt_indices (tuple): indices into the PromptSet of the masks merged into this instance.
    """

    mask: np.ndarray = field(repr=False)
    class_id: int
    score: float
    box: tuple[float, float, float, float]
    area: int
    prompt_indices: tuple[int, ...] = ()

    def to_coco_rle(self) -> dict:
        """Uncompressed COCO RLE ``{"size": [H, W], "counts": [...]}`` (column-major) of the mask."""
        return mask_to_rle(self.mask)


@dataclass(frozen=True, eq=False)
class MergeResult:
    """Refined segmentation of one image.

    Attributes:
      labels (np.ndarray): [H, W] refined label map, dtype of the dense labels.
      instances (list[Instance]): accepted instances, score descending.
      covered (np.ndarray): bool [H, W], pixels some accepted mask covers (elsewhere labels are dense).
    """

    labels: np.ndarray = field(repr=False)
    instances: list[Instance] = field(default_factory=list)
    covered: np.ndarray | None = field(default=None, repr=False)


def _pairwise_intersections(flat: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """int64 [M, M] pixel counts of pairwise intersections of bool [M, N] masks (exact, chunked)."""
    inter = np.zeros((flat.shape[0], flat.shape[0]), np.int64)
    for s in range(0, flat.shape[1], chunk):
        f = flat[:, s : s + chunk].astype(np.float32)  # exact: counts per chunk < 2**24
        inter += np.rint(f @ f.T).astype(np.int64)
    return inter


def _groups(adjacent: np.ndarray) -> list[list[int]]:
    """Connected components of a symmetric bool [M, M] graph, each sorted, ordered by first member."""
    parent = list(range(adjacent.shape[0]))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(adjacent, 1))):
        ri, rj = root(int(i)), root(int(j))
        parent[max(ri, rj)] = min(ri, rj)
    out: dict[int, list[int]] = {}
    for i in range(len(parent)):
        out.setdefault(root(i), []).append(i)
    return list(out.values())


def _check(dense_labels, probs, prompts, masks, mask_scores) -> None:
    if not isinstance(masks, np.ndarray) or masks.dtype != bool:
        got = getattr(masks, "dtype", type(masks).__name__)
        raise InvalidTypeError(f"masks must be a bool numpy array [P, H, W], got {got}")
    p, hw = len(prompts), prompts.image_size
    if masks.shape != (p, *hw):
        raise InvalidInputError(f"masks must be [P, H, W] = {(p, *hw)}, got {masks.shape}")
    if np.shape(mask_scores) != (p,) or not np.isfinite(mask_scores).all():
        raise InvalidInputError(f"mask_scores must be {p} finite numbers, got shape {np.shape(mask_scores)}")
    if np.shape(dense_labels) != hw:
        raise InvalidInputError(f"dense_labels must be {hw} like the prompts, got {np.shape(dense_labels)}")
    if np.ndim(probs) not in (2, 3) or np.shape(probs)[-2:] != hw:
        raise InvalidInputError(f"probs must be [C, H, W] or [H, W], (H, W) = {hw}; got {np.shape(probs)}")


def merge_masks(
    dense_labels: np.ndarray,
    probs: np.ndarray,
    prompts: PromptSet,
    masks: np.ndarray,
    mask_scores: np.ndarray,
    config: RefineConfig | None = None,
) -> MergeResult:
    """Merge decoded SAM2 masks into the dense label map (rules in the module docstring).

    Arguments:
      dense_labels (np.ndarray): int [H, W] dense CLIP labels.
      probs (np.ndarray): float [C, H, W] class probabilities, or [H, W] score of the labelled class
        (then P(c) is that score where the dense label is c and 0 elsewhere).
      prompts (PromptSet): the P prompts the masks were decoded from.
      masks (np.ndarray): bool [P, H, W], one mask per prompt.
      mask_scores (np.ndarray): float [P], SAM2's predicted IoU of each mask.
      config (RefineConfig or None): ``min_mask_score`` and ``dedup_iou``; None uses the defaults.

    Returns:
      (MergeResult): refined labels, instances (score descending) and the covered-pixel mask.
    """
    config = RefineConfig() if config is None else config
    _check(dense_labels, probs, prompts, masks, mask_scores)
    dense_labels = np.asarray(dense_labels)
    p, (h, w) = len(prompts), prompts.image_size
    flat = masks.reshape(p, h * w)
    areas = flat.sum(axis=1)

    class_probs: dict[int, np.ndarray] = {}
    mean_prob = np.zeros(p)
    for i in np.flatnonzero(areas):
        c = int(prompts.class_ids[i])
        if c not in class_probs:
            class_probs[c] = (probs[c] if probs.ndim == 3 else np.where(dense_labels == c, probs, 0)).ravel()
        mean_prob[i] = class_probs[c][flat[i]].mean(dtype=np.float64)
    scores = np.asarray(mask_scores, dtype=np.float64) * mean_prob
    accepted = np.flatnonzero((areas > 0) & (scores >= config.min_mask_score))

    merged: list[tuple[float, int, tuple[int, ...], np.ndarray]] = []  # (score, class, prompt indices, bool [H*W])
    for c in np.unique(prompts.class_ids[accepted]):
        idx = accepted[prompts.class_ids[accepted] == c]
        inter = _pairwise_intersections(flat[idx])
        iou = inter / (areas[idx][:, None] + areas[idx][None, :] - inter)
        for g in _groups(iou > config.dedup_iou):
            members = idx[g]
            merged.append(
                (float(scores[members].max()), int(c), tuple(int(m) for m in members), flat[members].any(axis=0))
            )
    merged.sort(key=lambda m: (-m[0], m[1], m[2]))

    owner = np.full(h * w, -1, np.int64)  # highest-scoring instance covering each pixel
    for rank, (_, _, _, m) in enumerate(merged):
        owner[m & (owner < 0)] = rank
    covered = owner >= 0
    inst_class = np.array([m[1] for m in merged], dtype=np.int64)
    owner_class = np.where(covered, inst_class[np.maximum(owner, 0)] if merged else -1, -1)
    labels = dense_labels.copy().reshape(-1)
    labels[covered] = owner_class[covered]

    instances = []
    for score, c, members, m in merged:
        m = (m & (owner_class == c)).reshape(h, w)  # cross-class pixels go to the higher score
        area = int(m.sum())
        if area:
            instances.append(Instance(m, c, score, _box(m), area, members))
    return MergeResult(labels.reshape(h, w), instances, covered.reshape(h, w))
