"""Dataset-level semantic segmentation metrics, computed the way mmseg's ``IoUMetric`` does.

Per image, pixels whose ground truth equals ``ignore_index`` are dropped; the rest are counted into
four per-class histograms (intersection, union, predicted area, ground-truth area) that are summed
over the whole dataset. At the end:

    IoU[c] = intersect[c] / union[c]      Acc[c] = intersect[c] / label[c]
    aAcc   = sum(intersect) / sum(label)  mIoU = nanmean(IoU)    mAcc = nanmean(Acc)

A class absent from both ground truth and prediction has union 0, so its IoU is NaN and is left out
of mIoU; a class absent from the ground truth has Acc NaN and is left out of mAcc. Summary values
are in percent, as mmseg logs them (mmseg also rounds them to 2 decimals; we keep full precision).

One ``np.bincount`` over ``num_classes * gt + pred`` gives the confusion matrix of an image; its
diagonal, column sums and row sums are the intersection, predicted and ground-truth areas. Counts
are int64, so a whole dataset at any resolution accumulates exactly. numpy only (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError, InvalidTypeError

_STATE_FORMAT = "clipsam.eval.SegmentationMetric"
_STATE_VERSION = 1
_AREAS = ("area_intersect", "area_union", "area_pred_label", "area_label")


def _nanmean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN (without a RuntimeWarning) when every entry is NaN."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as float64, NaN where ``den == 0`` (what torch gives mmseg for 0/0)."""
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


@dataclass(frozen=True, eq=False)  # eq=False: numpy array fields make == ambiguous
class MetricResult:
    """Final metrics over everything accumulated. Summary values are percentages in [0, 100].

    ``iou``/``acc`` are fractions in [0, 1] of shape (num_classes,), NaN where undefined; the four
    ``area_*`` arrays are the int64 pixel counts of shape (num_classes,) summed over the dataset.
    """

    mIoU: float  # nanmean(iou) * 100
    aAcc: float  # sum(intersect) / sum(label) * 100; NaN when no labelled pixel was seen
    mAcc: float  # nanmean(acc) * 100
    iou: np.ndarray  # (C,) float64, NaN for classes absent from both gt and prediction
    acc: np.ndarray  # (C,) float64, NaN for classes absent from the gt
    area_intersect: np.ndarray  # (C,) int64, pixels predicted c where the gt is c
    area_union: np.ndarray  # (C,) int64, pixels predicted c or labelled c
    area_pred_label: np.ndarray  # (C,) int64, pixels predicted c (ignored gt pixels excluded)
    area_label: np.ndarray  # (C,) int64, pixels labelled c
    num_images: int  # how many update() calls went into these counts

    @property
    def num_classes(self) -> int:
        return int(self.iou.shape[0])

    def summary(self) -> dict[str, float]:
        """``{"mIoU", "mAcc", "aAcc"}`` in percent, the keys mmseg's evaluator returns."""
        return {"aAcc": self.aAcc, "mIoU": self.mIoU, "mAcc": self.mAcc}

    def per_class_table(self, class_names: Sequence[str]) -> str:
        """A Markdown table with one row per class (IoU, Acc in percent, 2 decimals) and a mean row.

        Arguments:
          class_names: one name per class, in label-index order (length num_classes).
        """
        names = [str(n) for n in class_names]
        if len(names) != self.num_classes:
            raise InvalidInputError(
                f"per_class_table got {len(names)} class names for a metric over {self.num_classes} "
                "classes; pass one name per label index."
            )

        def fmt(v: float) -> str:
            return "nan" if math.isnan(v) else f"{v * 100:.2f}"

        lines = ["| Class | IoU | Acc |", "|---|---:|---:|"]
        for name, iou, acc in zip(names, self.iou, self.acc):
            lines.append(f"| {name.replace('|', '/')} | {fmt(float(iou))} | {fmt(float(acc))} |")
        lines.append(f"| **mean** | {fmt(self.mIoU / 100)} | {fmt(self.mAcc / 100)} |")
        return "\n".join(lines)


class SegmentationMetric:
    """Accumulates per-class pixel counts over a dataset, one (prediction, ground truth) pair at a time.

    Arguments:
      num_classes: number of classes C; valid label values are 0..C-1.
      ignore_index: ground-truth value whose pixels are left out (255 in every mmseg dataset).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        for arg, value in (("num_classes", num_classes), ("ignore_index", ignore_index)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise InvalidTypeError(f"SegmentationMetric {arg} must be an int, got {value!r}.")
        if num_classes < 1:
            raise InvalidInputError(f"SegmentationMetric num_classes must be >= 1, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.num_images = 0
        self._intersect = np.zeros(self.num_classes, dtype=np.int64)
        self._pred = np.zeros(self.num_classes, dtype=np.int64)
        self._label = np.zeros(self.num_classes, dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"SegmentationMetric(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"num_images={self.num_images})"
        )

    def _check(self, what: str, arr: Any) -> np.ndarray:
        a = np.asarray(arr)
        if a.dtype.kind not in "iu":
            raise InvalidTypeError(
                f"SegmentationMetric.update: {what} must hold integer class indices, got dtype {a.dtype}."
            )
        if a.ndim != 2:
            raise InvalidInputError(
                f"SegmentationMetric.update: {what} must be an HxW label map, got shape {a.shape}; "
                "squeeze batch/channel axes first."
            )
        return a

    def _out_of_range(self, what: str, values: np.ndarray, extra: str = "") -> InvalidInputError:
        bad = np.unique(values[(values < 0) | (values >= self.num_classes)])
        shown = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
        return InvalidInputError(
            f"SegmentationMetric.update: {what} has values outside [0, {self.num_classes}){extra}: {shown}. "
            "Check num_classes and the dataset's reduce_zero_label setting."
        )

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image.

        Arguments:
          pred: HxW integer array of predicted class indices, each in [0, num_classes).
          gt: HxW integer array of ground-truth indices in [0, num_classes), or ignore_index.
        """
        p = self._check("pred", pred)
        g = self._check("gt", gt)
        if p.shape != g.shape:
            raise InvalidInputError(
                f"SegmentationMetric.update: pred has shape {p.shape} but gt has shape {g.shape}; "
                "resize the prediction to the label size (nearest) before scoring."
            )
        n = self.num_classes
        if p.size and (p.min() < 0 or p.max() >= n):
            raise self._out_of_range("pred", p)
        valid = g != self.ignore_index
        g_v = g[valid].astype(np.int64, copy=False)
        p_v = p[valid].astype(np.int64, copy=False)
        if g_v.size and (g_v.min() < 0 or g_v.max() >= n):
            raise self._out_of_range("gt", g_v, extra=f" that are not ignore_index={self.ignore_index}")
        conf = np.bincount(g_v * n + p_v, minlength=n * n).reshape(n, n)  # rows: gt, columns: pred
        self._intersect += np.diagonal(conf)
        self._pred += conf.sum(axis=0)
        self._label += conf.sum(axis=1)
        self.num_images += 1

    def compute(self) -> MetricResult:
        """Metrics over every image added so far (all NaN before the first labelled pixel)."""
        inter, pred, label = self._intersect.copy(), self._pred.copy(), self._label.copy()
        union = pred + label - inter
        iou, acc = _ratio(inter, union), _ratio(inter, label)
        total = int(label.sum())
        a_acc = float(inter.sum()) / total * 100 if total else math.nan
        return MetricResult(
            mIoU=_nanmean(iou) * 100,
            aAcc=a_acc,
            mAcc=_nanmean(acc) * 100,
            iou=iou,
            acc=acc,
            area_intersect=inter,
            area_union=union,
            area_pred_label=pred,
            area_label=label,
            num_images=self.num_images,
        )

    def per_class_table(self, class_names: Sequence[str]) -> str:
        """Markdown per-class table of :meth:`compute`; see :meth:`MetricResult.per_class_table`."""
        return self.compute().per_class_table(class_names)

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.num_images = 0
        for arr in (self._intersect, self._pred, self._label):
            arr[:] = 0

    def merge(self, other: SegmentationMetric) -> SegmentationMetric:
        """Add ``other``'s counts into this metric in place (e.g. shards of a dataset); returns self."""
        if not isinstance(other, SegmentationMetric):
            raise InvalidTypeError(
                f"SegmentationMetric.merge expects a SegmentationMetric, got {type(other).__name__}."
            )
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise InvalidInputError(
                "SegmentationMetric.merge: cannot merge a metric with "
                f"num_classes={other.num_classes}, ignore_index={other.ignore_index} into one with "
                f"num_classes={self.num_classes}, ignore_index={self.ignore_index}."
            )
        self._intersect += other._intersect
        self._pred += other._pred
        self._label += other._label
        self.num_images += other.num_images
        return self

    def to_dict(self) -> dict[str, Any]:
        """The accumulated state as plain JSON-serialisable Python types (see :meth:`from_dict`)."""
        res = self.compute()
        state: dict[str, Any] = {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "num_images": self.num_images,
        }
        for key in _AREAS:
            state[key] = [int(v) for v in getattr(res, key)]
        return state

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> SegmentationMetric:
        """Rebuild a metric from :meth:`to_dict` output, so accumulation can resume where it stopped."""

        def bad(msg: str) -> InvalidInputError:
            return InvalidInputError(f"SegmentationMetric.from_dict: {msg}")

        if not isinstance(state, Mapping) or state.get("format") != _STATE_FORMAT:
            raise bad(f"expected a dict written by SegmentationMetric.to_dict() (format {_STATE_FORMAT!r}).")
        if state.get("version") != _STATE_VERSION:
            raise bad(f"unsupported state version {state.get('version')!r}, expected {_STATE_VERSION}.")
        missing = [k for k in ("num_classes", "ignore_index", "num_images", *_AREAS) if k not in state]
        if missing:
            raise bad(f"the state lacks {missing}.")
        metric = cls(state["num_classes"], state["ignore_index"])
        areas = {}
        for key in _AREAS:
            arr = np.asarray(state[key])
            if arr.shape != (metric.num_classes,) or arr.dtype.kind not in "iu" or (arr.size and arr.min() < 0):
                raise bad(
                    f"{key} must be {metric.num_classes} non-negative ints, got shape {arr.shape}, dtype {arr.dtype}."
                )
            areas[key] = arr.astype(np.int64)
        inter, pred, label = areas["area_intersect"], areas["area_pred_label"], areas["area_label"]
        if not np.array_equal(areas["area_union"], pred + label - inter) or np.any(inter > np.minimum(pred, label)):
            raise bad("the areas are inconsistent (union != pred + label - intersect, or intersect too large).")
        num_images = state["num_images"]
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 0:
            raise bad(f"num_images must be a non-negative int, got {num_images!r}.")
        metric._intersect[:] = inter
        metric._pred[:] = pred
        metric._label[:] = label
        metric.num_images = num_images
        return metric
