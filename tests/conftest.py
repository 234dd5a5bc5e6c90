"""Shared fixtures: a narrow 12-block OpenCLIP ViT (real architecture code, random weights) and photos."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU-only tests, like open_clip's own
TESTS = Path(__file__).parent
TINY_VIT = str(TESTS / "configs" / "clipsam-test-vit.json")


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def tiny_clip():
    """LoadedClip of the narrow test architecture (width 128, 2 heads of 64, 12 blocks, patch 16)."""
    from clipsam.models import load_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_clip(TINY_VIT, None)


@pytest.fixture(scope="session")
def make_segmenter(tiny_clip):
    """Factory: Segmenter sharing the tiny model, for any method/preset and config overrides."""
    from clipsam.config import dense_config
    from clipsam.segmenter import Segmenter

    def make(method="resclip", preset="voc21", **overrides):
        overrides.setdefault("templates", ("a photo of a {}.", "a sketch of the {}."))
        return Segmenter(tiny_clip, dense_config(method, preset, **overrides))

    return make


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    import skimage.data

    return skimage.data.chelsea()  # 300x451 RGB photograph


@pytest.fixture(scope="session")
def chelsea_small(chelsea) -> np.ndarray:
    import cv2

    return cv2.resize(chelsea, (120, 80), interpolation=cv2.INTER_AREA)
