"""Real architectures, once per test run: ViT-B/16 (ResCLIP, SFR split) + SAM2.1 hiera-t at 1024 px, random weights.

Exports every graph with its built-in validation (ONNX Runtime vs PyTorch per graph), then checks the whole
pipeline end to end against the PyTorch Segmenter + Sam2Refiner on a small photo.
"""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("sam2")

TEMPLATES = ("a photo of a {}.",)
REFINE_KW = dict(stuff_classes=(0,), min_confidence=0.0, min_mask_score=0.0, max_prompts_per_image=3)


@pytest.fixture(scope="module")
def models():
    from clipsam.models import load_clip
    from clipsam.refine.sam2_backend import Sam2Refiner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_clip("ViT-B-16", None), Sam2Refiner.from_pretrained("sam2.1_hiera_t", random_weights=True)


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    from clipsam.export import export_engines

    clip, sam2 = models
    out = tmp_path_factory.mktemp("vitb16_sam2")
    t0 = time.perf_counter()
    export_engines(
        out, clip=clip, sam2=sam2, method="resclip", preset="voc21", templates=TEMPLATES, max_images=2, log=None
    )
    return out, time.perf_counter() - t0


def test_every_graph_validates(exported):
    out, seconds = exported
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["clip"]["arch"] == "ViT-B-16" and manifest["clip"]["width"] == 768
    assert manifest["sam2"]["model"] == "sam2.1_hiera_t" and manifest["sam2"]["image_size"] == 1024
    graphs = {r["graph"] for r in manifest["validation"]}
    assert graphs == {
        "clip_text",
        "clip_dense_trunk",
        "clip_dense_pass1",
        "clip_dense_pass2",
        "sam2_image_encoder",
        "sam2_prompt_decoder",
    }
    assert all(r["ok"] for r in manifest["validation"])
    worst = {g: max(r["max_abs_err"] for r in manifest["validation"] if r["graph"] == g) for g in graphs}
    print(f"\nViT-B/16 + SAM2.1 hiera-t export: {seconds:.0f} s; worst |ORT - torch| per graph: {worst}")


def test_end_to_end_matches_pytorch(exported, models, chelsea_small):
    from clipsam.config import dense_config
    from clipsam.engine import EngineSegmenter
    from clipsam.refine import RefineConfig
    from clipsam.segmenter import Segmenter

    clip, sam2 = models
    refine = RefineConfig(**REFINE_KW)
    ref_seg = Segmenter(
        clip, dense_config("resclip", "voc21", templates=TEMPLATES, short_side=64), refiner=sam2, refine_config=refine
    )
    eng = EngineSegmenter(exported[0], short_side=64, refine=refine)
    np.testing.assert_allclose(eng.logits(chelsea_small), ref_seg.logits(chelsea_small), atol=1e-4, rtol=0)
    ref, got = ref_seg.segment(chelsea_small), eng.segment(chelsea_small)
    assert (got.dense_labels == ref.dense_labels).mean() >= 0.999
    assert (got.labels == ref.labels).mean() >= 0.999
    assert [i.class_id for i in got.instances] == [i.class_id for i in ref.instances]
