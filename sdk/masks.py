"""Region masks of CorrCLIP (``method="corrclip"``): user masks to an instance map, the map at each member's size,
and the mask vote. numpy only (the ONNX Runtime runtime shares it).

An **instance map** is an (H, W) integer array at the original image size: 0 (or, as upstream, the smallest id
present) is "unsegmented", every other id one region. ``docs/algorithms.md`` section 16 gives the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InvalidInputError, InvalidTypeError


def paint_masks(masks: np.ndarray, order: str = "ascending_area") -> np.ndarray:
    """Boolean masks (M, H, W) -> (H, W) int32 instance map.

    Masks are sorted by area with a stable sort (equal areas keep their order) and painted in that order with ids
    1 .. M: with ``"ascending_area"`` (upstream) a larger mask overwrites every smaller one it overlaps; with
    ``"descending_area"`` the smaller one wins. Pixels under no mask are 0.
    """
    masks = np.asarray(masks, dtype=bool)
    out = np.zeros(masks.shape[1:], np.int32)
    if len(masks) == 0:  # e.g. no automatic mask passed the filters: every pixel unsegmented
        return out
    areas = masks.reshape(len(masks), -1).sum(1)
    sort = np.argsort(areas if order == "ascending_area" else -areas, kind="stable")
    for new_id, i in enumerate(sort, start=1):
        out[masks[i]] = new_id
    return out


def compact_ids(ids: np.ndarray) -> np.ndarray:
    """Ids renumbered by rank, order kept: 0 stays 0 when present, the others become 1, 2, ... (so that no id reaches
    upstream's padding id 10000 and its merged ids 10000 + k). The smallest id stays the smallest."""
    values, inverse = np.unique(ids, return_inverse=True)
    offset = 0 if values[0] == 0 else 1
    return (inverse.reshape(ids.shape) + offset).astype(np.int32)


def instance_map(masks: Any, hw: tuple[int, int], order: str = "ascending_area", what: str = "masks") -> np.ndarray:
    """A user's masks for one image as an (H, W) int32 instance map (ids renumbered by ``compact_ids``).

    Arguments:
        masks: an (H, W) integer id map (0 = unsegmented), or boolean masks: an (M, H, W) array or a list of (H, W)
            arrays (painted by ``paint_masks``).
        hw: the image's original (H, W).
        order: ``paint_masks`` order for boolean masks.
        what: how errors name the input.

    Raises:
        InvalidTypeError / InvalidInputError for anything else (wrong type, dtype or shape, no masks, negative ids),
        naming the problem and the fix. The input is not modified.
    """
    h, w = hw
    form = (
        "an (H, W) integer instance map (0 = unsegmented), an (M, H, W) boolean array, or a list of (H, W) boolean "
        "masks, at the image's original size"
    )
    if isinstance(masks, (list, tuple)):
        if not masks:
            raise InvalidInputError(
                f"{what}: the list of masks is empty. Pass at least one mask, an all-zero (H, W) map for an image "
                "with no regions, or None to use the configured mask source (corr_mask_source)"
            )
        arrays = [m for m in masks if isinstance(m, np.ndarray)]
        if len(arrays) != len(masks) or any(m.dtype != bool or m.ndim != 2 for m in arrays):
            bad = next(m for m in masks if not isinstance(m, np.ndarray) or m.dtype != bool or m.ndim != 2)
            got = f"{bad.dtype} {bad.shape}" if isinstance(bad, np.ndarray) else type(bad).__name__
            raise InvalidInputError(f"{what}: a list of masks must hold (H, W) boolean numpy arrays, got {got}")
        if any(m.shape != (h, w) for m in arrays):
            bad = next(m for m in arrays if m.shape != (h, w))
            raise InvalidInputError(
                f"{what}: a mask is {bad.shape} but the image is {(h, w)}; give masks at the image's original size"
            )
        return paint_masks(np.stack(arrays), order)
    if not isinstance(masks, np.ndarray):
        raise InvalidTypeError(f"{what} must be {form}; got {type(masks).__name__}")
    if masks.dtype == bool and masks.ndim == 3:
        if masks.shape[0] == 0:
            raise InvalidInputError(
                f"{what}: the (M, H, W) mask array holds no masks (M = 0). Pass an all-zero (H, W) map for an image "
                "with no regions, or None to use the configured mask source (corr_mask_source)"
            )
        if masks.shape[1:] != (h, w):
            raise InvalidInputError(
                f"{what}: masks are {masks.shape[1:]} but the image is {(h, w)}; give masks at the image's original size"
            )
        return paint_masks(masks, order)
    if masks.ndim != 2 or not np.issubdtype(masks.dtype, np.integer):
        hint = " (one boolean mask: pass [mask])" if masks.dtype == bool else ""
        raise InvalidInputError(f"{what} must be {form}; got {masks.dtype} {masks.shape}{hint}")
    if masks.shape != (h, w):
        raise InvalidInputError(
            f"{what}: the instance map is {masks.shape} but the image is {(h, w)}; give it at the image's original size"
        )
    if masks.size and masks.min() < 0:
        raise InvalidInputError(f"{what}: instance ids must be >= 0 (0 = unsegmented), got {masks.min()}")
    return compact_ids(masks)


def resize_nearest(ids: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H0, W0) -> (h, w) with PyTorch's legacy ``nearest`` (source index floor(dst * in / out) in float32, as
    ``F.interpolate(mode="nearest", size=...)``)."""

    def index(out: int, n: int) -> np.ndarray:
        if out == n:
            return np.arange(out)
        if out == 2 * n:
            return np.arange(out) >> 1
        scale = np.float32(n) / np.float32(out)
        return np.minimum(np.floor(np.arange(out, dtype=np.float32) * scale).astype(np.int64), n - 1)

    return ids[np.ix_(index(hw[0], ids.shape[0]), index(hw[1], ids.shape[1]))]


def unsegmented_id(ids: np.ndarray, rule: str) -> int | None:
    """The id treated as unsegmented: the smallest present (``"smallest"``, upstream) or 0 if present (``"zero"``)."""
    if rule == "smallest":
        return int(ids.min())
    return 0 if (ids == 0).any() else None


def mask_vote(labels: np.ndarray, ids: np.ndarray, num_classes: int, rule: str = "smallest") -> np.ndarray:
    """Each region's pixels take the most frequent label among them (ties: the smallest label); the unsegmented
    region (``unsegmented_id``) keeps its per-pixel labels.

    Arguments:
        labels: (H, W) int labels.
        ids: (H, W) instance map (``compact_ids`` numbering: 0 .. K).
        num_classes: C.

    Returns:
        (H, W) int32 voted labels.
    """
    ids = ids.astype(np.int64)
    k = int(ids.max()) + 1
    counts = np.bincount((ids * num_classes + labels).ravel(), minlength=k * num_classes).reshape(k, num_classes)
    winner = counts.argmax(1)  # first maximum: the smallest label
    skip = unsegmented_id(ids, rule)
    voted = winner[ids]
    if skip is not None:
        voted = np.where(ids == skip, labels, voted)
    return voted.astype(np.int32)


def attach_regions(members: Sequence[Any], maps: Sequence[np.ndarray], ops: Any) -> None:
    """Give each ensemble member (``clipsam.pipeline.plan.Member``) its region map ``maps[member.image]`` resized to
    the member's pixels (``resize_nearest``) and flipped with them, as ``member.maps["regions"]`` (float32 ids)."""
    for m in members:
        h, w = m.pixels.shape[-2:]
        r = resize_nearest(maps[m.image], (h, w)).astype(np.float32)
        m.maps = {"regions": ops.from_numpy(np.ascontiguousarray(r[:, ::-1] if m.flip else r))}


def per_image(masks: Any, n: int) -> Sequence[Any]:
    """``masks`` of ``segment_batch``: None for every image, or one entry per image."""
    if masks is None:
        return [None] * n
    if isinstance(masks, np.ndarray) or not isinstance(masks, (list, tuple)) or len(masks) != n:
        raise InvalidInputError(
            f"masks must be a list with one entry per image ({n}), each an instance map, boolean masks or None"
        )
    return masks
