"""Dataset-level evaluation: mmseg-equivalent mIoU accumulation and readers for the benchmark datasets.

numpy + Pillow only (no torch), so scoring saved predictions needs none of the model stack.
"""

from .datasets import (
    DATASETS,
    Dataset,
    DatasetNotFoundError,
    DatasetSpec,
    Sample,
    open_dataset,
    read_label,
    reduce_zero_label,
)
from .metrics import MetricResult, SegmentationMetric

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetNotFoundError",
    "DatasetSpec",
    "MetricResult",
    "Sample",
    "SegmentationMetric",
    "open_dataset",
    "read_label",
    "reduce_zero_label",
]
