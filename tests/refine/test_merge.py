"""Mask merging rules and COCO RLE, on the VOC photograph's ground truth with hand-built masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from clipsam.errors import InvalidInputError, InvalidTypeError
from clipsam.refine import PromptSet, RefineConfig, extract_prompts, mask_to_rle, merge_masks, rle_to_mask

from ..utils import dense_from_gt

CFG = RefineConfig(min_mask_score=0.0)


def _prompts(class_ids, hw) -> PromptSet:
    """A PromptSet with the given classes (points are irrelevant to merging)."""
    p = len(class_ids)
    return PromptSet(
        np.zeros((p, 1, 2), np.float32),
        np.ones((p, 1), np.int32),
        None,
        np.asarray(class_ids, np.int64),
        np.ones(p, np.float32),
        np.ones(p, np.int64),
        np.full(hw, -1, np.int32),
    )


def _rect(hw, x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros(hw, bool)
    m[y0:y1, x0:x1] = True
    return m


def _shift(mask, dx) -> np.ndarray:
    return np.roll(mask, dx, axis=1)


# ---------------------------------------------------------------------------------------------- RLE


@pytest.mark.parametrize(
    "mask, counts",
    [
        ([[0, 1], [1, 1]], [1, 3]),  # column-major: 0 | 1 1 1
        ([[1, 0, 0], [1, 1, 0]], [0, 2, 1, 1, 2]),  # starts with a set pixel: leading 0-run of length 0
        ([[0, 0, 0], [0, 0, 0]], [6]),
        ([[1, 1, 1], [1, 1, 1]], [0, 6]),
        ([[0], [1], [1], [0]], [1, 2, 1]),
    ],
)
def test_rle_hand_checked(mask, counts):
    m = np.array(mask, bool)
    assert mask_to_rle(m) == {"size": list(m.shape), "counts": counts}
    assert np.array_equal(rle_to_mask({"size": list(m.shape), "counts": counts}), m)


def test_rle_round_trip_and_column_major(voc):
    rng = np.random.default_rng(0)
    masks = list(voc["masks"]) + [rng.random((7, 5)) > 0.5, np.zeros((0, 4), bool)]
    for m in masks:
        rle = mask_to_rle(m)
        assert np.array_equal(rle_to_mask(rle), m) and sum(rle["counts"]) == m.size
        assert all(isinstance(c, int) for c in rle["counts"])
        flat = m.T.ravel()  # column-major order, computed independently
        pieces = np.split(flat, np.flatnonzero(np.diff(flat.astype(int))) + 1) if m.size else []
        runs = [len(piece) for piece in pieces]
        assert rle["counts"] == ([0] + runs if m.size and flat[0] else runs)


@pytest.mark.parametrize(
    "rle", [{"size": [2, 2], "counts": [1, 2]}, {"size": [2, 2]}, {"counts": [4]}, {"size": [2, 2], "counts": [5, -1]}]
)
def test_rle_decode_rejects_malformed(rle):
    with pytest.raises(InvalidInputError):
        rle_to_mask(rle)


# ------------------------------------------------------------------------------------------ merging


def test_perfect_masks_on_coarse_clip_map_recover_ground_truth(voc):
    """A 16-px-patch dense map refined with ground-truth instance masks ("perfect SAM") gets closer to GT."""
    gt = voc["gt"]
    h, w = gt.shape
    coarse = cv2.resize(
        cv2.resize(gt, (w // 16, h // 16), interpolation=cv2.INTER_NEAREST), (w, h), interpolation=cv2.INTER_NEAREST
    )
    probs = dense_from_gt(coarse)
    ps = extract_prompts(coarse, probs, RefineConfig(stuff_classes=(0,)))
    masks = np.zeros((len(ps), h, w), bool)
    for p, region in enumerate(ps.region_masks()):
        same = np.flatnonzero(voc["labels"] == ps.class_ids[p])
        if len(same):
            masks[p] = voc["masks"][same[np.argmax((voc["masks"][same] & region).sum((1, 2)))]]
    res = merge_masks(coarse, probs, ps, masks, np.ones(len(ps)), RefineConfig())
    assert (res.labels == gt).mean() > (coarse == gt).mean() + 0.03
    assert np.array_equal(res.labels[~res.covered], coarse[~res.covered])  # uncovered keep dense labels
    assert np.array_equal(res.covered, np.any([i.mask for i in res.instances], axis=0))
    assert len({tuple(i.prompt_indices) for i in res.instances}) == len(res.instances)
    assert sum(len(i.prompt_indices) for i in res.instances) <= len(ps)
    scores = [i.score for i in res.instances]
    assert scores == sorted(scores, reverse=True)
    for inst in res.instances:
        ys, xs = np.nonzero(inst.mask)
        assert inst.box == (xs.min(), ys.min(), xs.max(), ys.max()) and inst.area == len(xs)
        assert np.array_equal(rle_to_mask(inst.to_coco_rle()), inst.mask)
        assert (res.labels[inst.mask] == inst.class_id).all()


def test_score_is_sam_score_times_mean_clip_probability(voc):
    gt, probs = voc["gt"], voc["probs"]
    person = voc["masks"][np.flatnonzero(voc["labels"] == 15)[0]]
    res = merge_masks(gt, probs, _prompts([15], gt.shape), person[None], np.array([0.8]), CFG)
    assert np.isclose(res.instances[0].score, 0.8 * probs[15][person].mean())
    dropped = merge_masks(
        gt, probs, _prompts([15], gt.shape), person[None], np.array([0.8]), RefineConfig(min_mask_score=0.8)
    )
    assert dropped.instances == [] and not dropped.covered.any() and np.array_equal(dropped.labels, gt)
    scores = np.take_along_axis(probs, gt[None], 0)[0]  # [H, W] scores: P(c) = score where dense == c, else 0
    flat = merge_masks(gt, scores, _prompts([15], gt.shape), person[None], np.array([0.8]), CFG)
    assert np.isclose(flat.instances[0].score, 0.8 * np.where(gt == 15, scores, 0)[person].mean())


def test_same_class_duplicates_merge_transitively(voc):
    gt = voc["gt"]
    ones = np.ones((21, *gt.shape), np.float32)
    big = voc["masks"][np.argmax(voc["masks"].sum((1, 2)) * (voc["labels"] == 15))]
    masks = np.stack([big, _shift(big, 3), _shift(big, 6), _shift(big, 150)])
    iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    assert iou(masks[0], masks[1]) > 0.8 and iou(masks[1], masks[2]) > 0.8 and iou(masks[0], masks[3]) < 0.8
    cfg = RefineConfig(min_mask_score=0.0, dedup_iou=0.8)
    res = merge_masks(gt, ones, _prompts([15] * 4, gt.shape), masks, np.array([0.5, 0.9, 0.6, 0.7]), cfg)
    assert len(res.instances) == 2
    merged, other = res.instances
    assert merged.prompt_indices == (0, 1, 2) and merged.score == pytest.approx(0.9)
    assert np.array_equal(merged.mask, masks[:3].any(0))
    assert other.prompt_indices == (3,) and np.array_equal(other.mask, masks[3])  # same class: may overlap
    strict = merge_masks(
        gt,
        ones,
        _prompts([15] * 4, gt.shape),
        masks,
        np.array([0.5, 0.9, 0.6, 0.7]),
        RefineConfig(min_mask_score=0.0, dedup_iou=1.0),
    )
    assert len(strict.instances) == 4


@pytest.mark.parametrize("scores, winner", [((0.9, 0.4), 15), ((0.4, 0.9), 9)])
def test_cross_class_overlap_goes_to_higher_score(voc, scores, winner):
    gt = voc["gt"]
    ones = np.ones((21, *gt.shape), np.float32)
    a, b = _rect(gt.shape, 100, 100, 200, 200), _rect(gt.shape, 150, 150, 260, 240)
    res = merge_masks(gt, ones, _prompts([15, 9], gt.shape), np.stack([a, b]), np.array(scores), CFG)
    overlap = a & b
    assert (res.labels[overlap] == winner).all()
    assert (res.labels[a & ~b] == 15).all() and (res.labels[b & ~a] == 9).all()
    assert np.array_equal(res.labels[~(a | b)], gt[~(a | b)])
    by_class = {i.class_id: i for i in res.instances}
    loser = 9 if winner == 15 else 15
    assert not by_class[loser].mask[overlap].any() and by_class[winner].mask[overlap].all()
    assert res.instances[0].class_id == winner  # score descending
    assert by_class[loser].area == (b if loser == 9 else a).sum() - overlap.sum()


def test_swallowed_instance_is_dropped_and_empty_inputs(voc):
    gt = voc["gt"].astype(np.uint8)
    ones = np.ones((21, *gt.shape), np.float32)
    outer, inner = _rect(gt.shape, 50, 50, 250, 250), _rect(gt.shape, 100, 100, 150, 150)
    masks = np.stack([outer, inner, np.zeros(gt.shape, bool)])
    res = merge_masks(gt, ones, _prompts([11, 15, 9], gt.shape), masks, np.array([0.9, 0.5, 1.0]), CFG)
    assert [i.class_id for i in res.instances] == [11] and (res.labels[outer] == 11).all()
    assert res.labels.dtype == np.uint8
    empty = merge_masks(gt, ones, _prompts([], gt.shape), np.zeros((0, *gt.shape), bool), np.zeros(0), CFG)
    assert empty.instances == [] and np.array_equal(empty.labels, gt) and not empty.covered.any()


def test_merge_input_validation(voc):
    gt = voc["gt"]
    ps, ones = _prompts([15], gt.shape), np.ones((21, *gt.shape), np.float32)
    m = np.zeros((1, *gt.shape), bool)
    with pytest.raises(InvalidTypeError):
        merge_masks(gt, ones, ps, m.astype(np.float32), np.ones(1))
    with pytest.raises(InvalidInputError):
        merge_masks(gt, ones, ps, np.zeros((2, *gt.shape), bool), np.ones(2))
    with pytest.raises(InvalidInputError):
        merge_masks(gt, ones, ps, m, np.array([np.nan]))
    with pytest.raises(InvalidInputError):
        merge_masks(gt[:10], ones, ps, m, np.ones(1))
