"""SegmentationMetric against an independent confusion-matrix computation, plus resume, merge and bad inputs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from clipsam.errors import ClipSamError, InvalidInputError, InvalidTypeError
from clipsam.eval import MetricResult, SegmentationMetric

C = 7  # class 5: never in gt nor pred (IoU NaN); class 6: only ever predicted (IoU 0, Acc NaN)


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)


def _random_pairs(n_images: int = 6, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Label maps of odd sizes; each image draws its gt from a random subset of classes 0..4, ~10% ignore."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n_images):
        h, w = int(rng.integers(5, 40)), int(rng.integers(5, 40))
        present = rng.choice(5, size=int(rng.integers(1, 4)), replace=False)  # classes missing in some images
        gt = rng.choice(present, size=(h, w)).astype(np.uint8)
        gt[rng.random((h, w)) < 0.1] = 255
        pred = gt.astype(np.int64)
        flip = rng.random((h, w)) < 0.3
        pred[flip] = rng.choice([0, 1, 2, 3, 4, 6], size=int(flip.sum()))
        pred[gt == 255] = rng.integers(0, C, size=int((gt == 255).sum()))  # predictions under ignore pixels
        pairs.append((pred, gt))
    return pairs


def _reference(pairs, num_classes=C, ignore=255):
    """mmseg IoUMetric numbers from a confusion matrix built with np.add.at (rows gt, columns pred)."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for pred, gt in pairs:
        keep = gt != ignore
        np.add.at(cm, (gt[keep].astype(np.int64), pred[keep].astype(np.int64)), 1)
    inter = np.diag(cm)
    label, predicted = cm.sum(1), cm.sum(0)
    union = label + predicted - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
        acc = inter / label
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return dict(
            mIoU=np.nanmean(iou) * 100,
            mAcc=np.nanmean(acc) * 100,
            aAcc=inter.sum() / label.sum() * 100,
            iou=iou,
            acc=acc,
            inter=inter,
            union=union,
            pred=predicted,
            label=label,
        )


def _assert_same(res: MetricResult, ref: dict) -> None:
    np.testing.assert_array_equal(res.area_intersect, ref["inter"])
    np.testing.assert_array_equal(res.area_union, ref["union"])
    np.testing.assert_array_equal(res.area_pred_label, ref["pred"])
    np.testing.assert_array_equal(res.area_label, ref["label"])
    np.testing.assert_allclose(res.iou, ref["iou"], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(res.acc, ref["acc"], rtol=1e-12, equal_nan=True)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert math.isclose(getattr(res, key), ref[key], rel_tol=1e-12), key


def test_matches_confusion_matrix_reference():
    pairs = _random_pairs()
    metric = SegmentationMetric(C)
    for pred, gt in pairs:
        metric.update(pred, gt)
    res = metric.compute()
    ref = _reference(pairs)
    _assert_same(res, ref)
    assert res.num_images == len(pairs)
    assert math.isnan(res.iou[5]) and math.isnan(res.acc[5])  # absent everywhere: out of both means
    assert res.iou[6] == 0.0 and math.isnan(res.acc[6])  # predicted but never labelled
    assert res.area_intersect.dtype == np.int64
    assert set(res.summary()) == {"mIoU", "mAcc", "aAcc"}


def test_small_example_by_hand():
    gt = np.array([[0, 0, 1], [1, 255, 2]], dtype=np.uint8)
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    m = SegmentationMetric(4)
    m.update(pred, gt)
    r = m.compute()
    # valid (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,0); the pred 2 under the ignored pixel is not counted.
    # class 0: I=1, P=2, L=2, U=3 | class 1: I=2, P=3, L=2, U=3 | class 2: I=0, P=0, L=1, U=1 | class 3: absent
    np.testing.assert_array_equal(r.area_intersect, [1, 2, 0, 0])
    np.testing.assert_array_equal(r.area_pred_label, [2, 3, 0, 0])
    np.testing.assert_array_equal(r.area_label, [2, 2, 1, 0])
    np.testing.assert_array_equal(r.area_union, [3, 3, 1, 0])
    assert math.isclose(r.mIoU, (1 / 3 + 2 / 3 + 0) / 3 * 100)
    assert math.isclose(r.mAcc, (1 / 2 + 2 / 2 + 0) / 3 * 100)
    assert math.isclose(r.aAcc, 3 / 5 * 100)
    table = r.per_class_table(["sky", "tree", "road", "car"])
    assert table.splitlines()[0] == "| Class | IoU | Acc |"
    assert "| tree | 66.67 | 100.00 |" in table and "| car | nan | nan |" in table
    assert table.splitlines()[-1] == f"| **mean** | {r.mIoU:.2f} | {r.mAcc:.2f} |"
    assert m.per_class_table(["a", "b", "c", "d"]).count("\n") == 6


def test_resume_from_json_midway():
    pairs = _random_pairs(n_images=7, seed=3)
    full = SegmentationMetric(C)
    for pred, gt in pairs:
        full.update(pred, gt)

    first = SegmentationMetric(C)
    for pred, gt in pairs[:3]:
        first.update(pred, gt)
    saved = json.dumps(first.to_dict())
    resumed = SegmentationMetric.from_dict(json.loads(saved))
    assert resumed.num_images == 3
    for pred, gt in pairs[3:]:
        resumed.update(pred, gt)
    _assert_same(resumed.compute(), _reference(pairs))
    a, b = full.compute(), resumed.compute()
    assert (a.mIoU, a.mAcc, a.aAcc, a.num_images) == (b.mIoU, b.mAcc, b.aAcc, b.num_images)


def test_merge_shards_equals_single_pass():
    pairs = _random_pairs(n_images=6, seed=4)
    shards = [SegmentationMetric(C) for _ in range(3)]
    for i, (pred, gt) in enumerate(pairs):
        shards[i % 3].update(pred, gt)
    merged = shards[0].merge(shards[1]).merge(shards[2])
    assert merged is shards[0] and merged.num_images == 6
    _assert_same(merged.compute(), _reference(pairs))
    with pytest.raises(InvalidInputError, match="num_classes=8"):
        merged.merge(SegmentationMetric(8))
    with pytest.raises(InvalidTypeError):
        merged.merge(merged.to_dict())  # type: ignore[arg-type]


def test_empty_metric_is_nan_without_warnings():
    m = SegmentationMetric(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = m.compute()
        m.update(np.zeros((2, 2), np.int64), np.full((2, 2), 255, np.uint8))  # only ignored pixels
        r2 = m.compute()
    assert math.isnan(r.mIoU) and math.isnan(r.aAcc) and math.isnan(r.mAcc)
    assert math.isnan(r2.mIoU) and r2.num_images == 1
    m.reset()
    assert m.num_images == 0 and m.compute().area_pred_label.sum() == 0


def test_custom_ignore_index():
    gt = np.array([[0, 1], [-1, 1]])
    pred = np.array([[0, 1], [1, 0]])
    m = SegmentationMetric(2, ignore_index=-1)
    m.update(pred, gt)
    np.testing.assert_array_equal(m.compute().area_label, [1, 2])


def test_shape_mismatch_names_both_shapes():
    m = SegmentationMetric(C)
    with pytest.raises(InvalidInputError, match=r"\(4, 5\).*\(4, 6\)"):
        m.update(np.zeros((4, 5), np.int64), np.zeros((4, 6), np.uint8))
    assert m.num_images == 0


@pytest.mark.parametrize("bad", [C, -1, 255])
def test_pred_out_of_range(bad):
    pred = np.zeros((3, 3), np.int64)
    pred[1, 1] = bad
    m = SegmentationMetric(C)
    with pytest.raises(InvalidInputError, match=rf"pred has values outside \[0, {C}\): {bad}"):
        m.update(pred, np.zeros((3, 3), np.uint8))
    assert m.num_images == 0 and m.compute().area_label.sum() == 0  # nothing half-added


def test_gt_out_of_range_that_is_not_ignored():
    gt = np.zeros((3, 3), np.uint8)
    gt[0, 0] = 200
    with pytest.raises(InvalidInputError, match="gt has values outside .*200"):
        SegmentationMetric(C).update(np.zeros((3, 3), np.int64), gt)


def test_bad_types_and_ranks():
    m = SegmentationMetric(C)
    with pytest.raises(InvalidTypeError, match="float"):
        m.update(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8))
    with pytest.raises(InvalidInputError, match="HxW"):
        m.update(np.zeros((1, 2, 2), np.int64), np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(InvalidInputError):
        SegmentationMetric(0)
    with pytest.raises(InvalidTypeError):
        SegmentationMetric(2.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="3 class names"):
        m.per_class_table(["a", "b", "c"])
    assert issubclass(InvalidInputError, ClipSamError)


def test_from_dict_rejects_bad_state():
    m = SegmentationMetric(3)
    m.update(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 1]]))
    good = m.to_dict()
    assert SegmentationMetric.from_dict(good).to_dict() == good
    with pytest.raises(InvalidInputError, match="to_dict"):
        SegmentationMetric.from_dict({"num_classes": 3})
    with pytest.raises(InvalidInputError, match="version"):
        SegmentationMetric.from_dict({**good, "version": 99})
    with pytest.raises(InvalidInputError, match="area_label must be 3"):
        SegmentationMetric.from_dict({**good, "area_label": [1, 2]})
    with pytest.raises(InvalidInputError, match="inconsistent"):
        SegmentationMetric.from_dict({**good, "area_union": [9, 9, 9]})
    with pytest.raises(InvalidInputError, match="lacks"):
        SegmentationMetric.from_dict({k: v for k, v in good.items() if k != "num_images"})


def test_import_does_not_pull_torch():
    code = "import sys, clipsam.eval; assert 'torch' not in sys.modules, 'clipsam.eval imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
