"""Prompt extraction on a real VOC photograph's ground truth, plus synthetic edge cases."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from skimage.measure import label as sk_label

from clipsam.errors import ConfigError, InvalidInputError, InvalidTypeError
from clipsam.refine import PromptSet, RefineConfig, extract_prompts

STUFF = RefineConfig(stuff_classes=(0,), negative_points=True, use_boxes=True)


def _reference_regions(gt: np.ndarray, min_area: int, classes) -> set[tuple[int, int]]:
    """(class, area) of every 8-connected region with >= min_area pixels, via scikit-image."""
    out = set()
    for c in classes:
        lab = sk_label(gt == c, connectivity=2)
        areas = np.bincount(lab.ravel())[1:]
        out |= {(int(c), int(a)) for a in areas if a >= min_area}
    return out


def test_points_lie_inside_their_regions(voc):
    ps = extract_prompts(voc["gt"], voc["probs"], STUFF)
    assert len(ps) > 0
    for p in range(len(ps)):
        c = ps.class_ids[p]
        for (x, y), lab in zip(ps.point_coords[p].astype(int), ps.point_labels[p]):
            if lab == 1:
                assert ps.region_map[y, x] == p and voc["gt"][y, x] == c
            elif lab == 0:  # negatives: inside a region of another class
                assert voc["gt"][y, x] != c and voc["probs"][voc["gt"][y, x], y, x] >= 0.5
    assert np.array_equal(ps.point_coords, np.round(ps.point_coords))  # pixel indices


def test_every_large_region_gets_a_prompt(voc):
    gt, cfg = voc["gt"], RefineConfig(stuff_classes=(0,))
    ps = extract_prompts(gt, voc["probs"], cfg)
    min_area = int(np.ceil(cfg.min_region_frac * gt.size))
    expected = _reference_regions(gt, min_area, [5, 9, 11, 15])
    assert sorted(expected) == sorted(zip(ps.class_ids.tolist(), ps.areas.tolist()))
    assert set(ps.class_ids.tolist()) == {5, 9, 11, 15}  # bottle, chair, dining table, person
    masks = ps.region_masks()
    assert masks.shape == (len(ps), *gt.shape) and masks.sum(0).max() == 1  # disjoint
    assert np.array_equal(masks.sum((1, 2)), ps.areas)
    for p in range(len(ps)):
        assert (gt[masks[p]] == ps.class_ids[p]).all()
        assert np.isclose(ps.confidences[p], voc["probs"][ps.class_ids[p]][masks[p]].mean(), atol=1e-6)


def test_output_types_sorting_and_point_counts(voc):
    ps = extract_prompts(voc["gt"], voc["probs"], STUFF)
    p, k = len(ps), STUFF.num_points
    assert ps.point_coords.dtype == np.float32 and ps.point_coords.shape == (p, k, 2)
    assert ps.point_labels.dtype == np.int32 and ps.point_labels.shape == (p, k)
    assert ps.boxes.dtype == np.float32 and ps.boxes.shape == (p, 4)
    assert ps.class_ids.dtype == np.int64 and ps.confidences.dtype == np.float32
    order = np.lexsort((-ps.areas, ps.class_ids))
    assert np.array_equal(order, np.arange(p))  # class, then area descending
    hw = voc["gt"].size
    n_pos = (ps.point_labels == 1).sum(1)
    assert np.array_equal(n_pos, np.minimum(3, 1 + ps.areas // (0.02 * hw)))
    assert n_pos.max() == 3 and n_pos.min() == 1
    for row in ps.point_labels:  # positives, then negatives, then padding
        assert np.array_equal(row, np.sort(row)[::-1])
    for p_, box in enumerate(ps.boxes):  # tight, inclusive boxes
        ys, xs = np.nonzero(ps.region_map == p_)
        assert tuple(box) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_deterministic(voc):
    a = extract_prompts(voc["gt"], voc["probs"], STUFF)
    b = extract_prompts(np.asfortranarray(voc["gt"]).astype(np.int64), voc["probs"].copy(), STUFF)
    for f in ("point_coords", "point_labels", "boxes", "class_ids", "confidences", "areas", "region_map"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f


def test_scores_map_equals_probs(voc):
    scores = np.take_along_axis(voc["probs"], voc["gt"][None], 0)[0]
    a, b = extract_prompts(voc["gt"], voc["probs"], STUFF), extract_prompts(voc["gt"], scores, STUFF)
    for f in ("point_coords", "point_labels", "class_ids", "confidences", "areas"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f


def test_class_filters_confidence_size_and_cap(voc):
    gt, probs = voc["gt"], voc["probs"]
    assert set(extract_prompts(gt, probs, RefineConfig(thing_classes=(15,))).class_ids) == {15}
    assert 0 in extract_prompts(gt, probs).class_ids
    assert 0 not in extract_prompts(gt, probs, RefineConfig(stuff_classes=(0, 9))).class_ids
    low = probs.copy()
    low[15] = np.where(gt == 15, 0.3, low[15])
    assert 15 not in extract_prompts(gt, low, STUFF).class_ids
    assert 15 in extract_prompts(gt, low, RefineConfig(stuff_classes=(0,), min_confidence=0.25)).class_ids
    big = extract_prompts(gt, probs, RefineConfig(stuff_classes=(0,), min_region_frac=0.05))
    assert (big.areas >= 0.05 * gt.size).all() and len(big) == 4
    full = extract_prompts(gt, probs, STUFF)
    capped = extract_prompts(gt, probs, RefineConfig(stuff_classes=(0,), max_prompts_per_image=4))
    assert sorted(capped.areas) == sorted(np.sort(full.areas)[-4:])
    assert np.array_equal(np.lexsort((-capped.areas, capped.class_ids)), np.arange(4))


def test_nonconvex_region_first_point_is_interior_max():
    ring = np.zeros((60, 60), np.uint8)
    cv2.circle(ring, (30, 30), 25, 1, thickness=-1)
    cv2.circle(ring, (30, 30), 12, 0, thickness=-1)  # ring: its centroid is background
    labels = ring.astype(np.int64)
    probs = np.stack([labels == 0, labels == 1]).astype(np.float32)
    ps = extract_prompts(labels, probs, RefineConfig(thing_classes=(1,), min_region_frac=0.0))
    (x, y) = ps.point_coords[0, 0].astype(int)
    assert labels[y, x] == 1 and len(ps) == 1
    dist = cv2.distanceTransform(np.pad(labels == 1, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    assert dist[y, x] == dist.max()
    assert (y, x) == np.unravel_index(np.argmax(dist), dist.shape)  # first maximum in raster order


def test_extra_points_are_spread_and_interior():
    labels = np.zeros((100, 100), np.int64)
    labels[10:40, 5:95] = 1  # long bar: 2700 px = 27 % of the image -> 3 points
    ps = extract_prompts(labels, (labels == 1).astype(np.float32), RefineConfig(thing_classes=(1,)))
    pts = ps.point_coords[0][ps.point_labels[0] == 1]
    assert len(pts) == 3 and (labels[pts[:, 1].astype(int), pts[:, 0].astype(int)] == 1).all()
    assert np.ptp(pts[:, 0]) > 40  # spread along the bar
    assert (pts[:, 1] >= 17).all() and (pts[:, 1] <= 32).all()  # away from the long edges


def test_negatives_come_from_nearest_other_class_regions():
    labels = np.zeros((80, 120), np.int64)
    labels[10:30, 10:30], labels[10:30, 34:54], labels[50:70, 90:110], labels[45:75, 5:25] = 1, 2, 3, 1
    probs = np.eye(4, dtype=np.float32)[labels].transpose(2, 0, 1)
    probs[0] = 0.0  # background is not confident: no region, so never a negative
    cfg = RefineConfig(thing_classes=(1,), negative_points=True, min_region_frac=0, points_per_region=1)
    ps = extract_prompts(labels, probs, cfg)
    assert ps.class_ids.tolist() == [1, 1] and ps.areas.tolist() == [600, 400]
    for p in range(2):
        assert ps.point_labels[p].tolist() == [1, 0, 0]  # small regions: one positive, two negatives
        (x1, y1), (x2, y2) = ps.point_coords[p, 1:].astype(int)
        assert (labels[y1, x1], labels[y2, x2]) == (2, 3)  # nearest first; never class 1 itself
    one = extract_prompts(
        labels,
        probs,
        RefineConfig(
            thing_classes=(1,), negative_points=True, points_per_region=1, negatives_per_region=1, min_region_frac=0
        ),
    )
    assert one.point_labels.shape == (2, 2) and np.array_equal(one.point_coords, ps.point_coords[:, :2])


def test_empty_and_void():
    ps = extract_prompts(np.full((8, 9), -1, np.int32), np.zeros((2, 8, 9), np.float32))
    assert isinstance(ps, PromptSet) and len(ps) == 0
    assert ps.point_coords.shape == (0, 3, 2) and ps.region_masks().shape == (0, 8, 9)


@pytest.mark.parametrize(
    "labels, probs, err",
    [
        (np.zeros((4, 4), np.float32), np.zeros((2, 4, 4), np.float32), InvalidTypeError),
        (np.zeros((4, 4), np.int64), np.zeros((2, 4, 4), np.int64), InvalidTypeError),
        (np.zeros((4, 4), np.int64), np.zeros((2, 4, 5), np.float32), InvalidInputError),
        (np.zeros((4,), np.int64), np.zeros((4,), np.float32), InvalidInputError),
        (np.full((4, 4), 2, np.int64), np.zeros((2, 4, 4), np.float32), InvalidInputError),
        (np.zeros((4, 4), np.int64), np.full((2, 4, 4), np.nan, np.float32), InvalidInputError),
    ],
)
def test_input_validation(labels, probs, err):
    with pytest.raises(err):
        extract_prompts(labels, probs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_confidence": 1.5},
        {"min_region_frac": -0.1},
        {"points_per_region": 0},
        {"dedup_iou": 0.0},
        {"max_prompts_per_image": 0},
        {"interior_frac": 2.0},
        {"min_mask_score": float("nan")},
        {"thing_classes": (1, 2), "stuff_classes": (2,)},
        {"thing_classes": (-1,)},
        {"stuff_classes": "sky"},
        {"use_boxes": 1},
        {"points_per_region": 2.5},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ConfigError):
        RefineConfig(**kwargs)


def test_config_normalises_and_is_frozen():
    cfg = RefineConfig(thing_classes=[3, 1, 3], negative_points=True)
    assert cfg.thing_classes == (1, 3) and cfg.num_points == 5
    assert cfg.refines(1) and not cfg.refines(2)
    assert not RefineConfig(stuff_classes=(0,)).refines(0) and RefineConfig(stuff_classes=(0,)).refines(7)
    with pytest.raises(AttributeError):
        cfg.min_confidence = 0.1  # type: ignore[misc]


def test_importing_refine_does_not_import_torch():
    code = (
        "import sys, clipsam.refine, clipsam.refine.prompts, clipsam.refine.merge;"
        "assert 'torch' not in sys.modules and 'sam2' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
