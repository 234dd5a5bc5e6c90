"""RF-CLIP on exported engines (``clip_dense_rfclip`` + ``clipsam.engine.rfclip``) against the PyTorch Segmenter.

The engine folder is exported from the planted test model (``rfclip_planted`` in ``tests/conftest.py``: a sink
channel carrying the red plane, so that the denoising fires on the red part of the image) with planted query
embeddings (synonym groups that the clustering merges). One folder (preset voc21) serves every variant: the windows,
the source of the global embedding and PAMR are host-side settings, given to both backends as overrides.
"""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.config import dense_config
from clipsam.engine import EngineSegmenter
from clipsam.errors import ManifestMismatchError
from clipsam.ops.rfclip import cluster_queries

from ..dense.test_rfclip import _flush_denormals  # noqa: F401  (module fixture: denormals of random weights)
from ..engines import TEMPLATES

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

HEAD = dict(short_side=64, rf_cluster_threshold=0.08, rf_text_alpha=0.3, rf_global_weight=0.3)
SLIDE = dict(slide_crop=48, slide_stride=32)
VARIANTS = {
    "whole-image-own-cls": {},  # voc21: one window, its own CLS
    "sliding-image-cls": dict(SLIDE, rf_global_source="image"),  # context60 ...: the whole image's CLS
    "sliding-window-cls": dict(SLIDE, rf_global_source="window"),  # cityscapes: each window's CLS
    "sliding-image-cls-pamr": dict(SLIDE, rf_global_source="image", pamr_iters=10),
    "whole-image-pamr": dict(pamr_iters=10),
}


@pytest.fixture(scope="module")
def folder(rfclip_planted, tmp_path_factory):
    from clipsam.export import export_engines

    out = tmp_path_factory.mktemp("engine_rfclip")
    export_engines(
        out,
        clip=rfclip_planted.clip,
        method="rfclip",
        preset="voc21",
        templates=TEMPLATES,
        log=None,
        **rfclip_planted.overrides,
    )
    return out


def _pair(rfclip_planted, folder, precision="fp32", max_batch=8, **overrides):
    """(PyTorch Segmenter, EngineSegmenter) on the planted model and the planted text, with the same settings."""
    from clipsam.segmenter import Segmenter

    kw = {**HEAD, **overrides}
    cfg = dense_config("rfclip", "voc21", templates=TEMPLATES, **rfclip_planted.overrides, **kw)
    ref = Segmenter(rfclip_planted.clip, cfg, max_batch=max_batch)
    eng = EngineSegmenter(folder, precision=precision, max_batch=max_batch, **kw)
    text, vocab = rfclip_planted.text()
    ref.text_embeddings = lambda v, progress=None: text
    eng.text_embeddings = lambda v, progress=None: text.numpy()
    return ref, eng, vocab


def _spy_denoise(monkeypatch):
    """Record, per denoising call of the PyTorch encoder, the share of patches whose 3x3 mean was taken."""
    import clipsam.dense.rfclip as rf

    fired: list[float] = []
    orig = rf.denoise

    def spy(x, grid, channels, sigma, alpha, exact_identity=False):
        out = orig(x, grid, channels, sigma, alpha, exact_identity)
        none = orig(x, grid, channels, float("inf"), alpha, exact_identity)  # nothing flagged
        fired.append(float(((out - none)[:, 1:].abs().amax(-1) > 0).float().mean()))
        return out

    monkeypatch.setattr(rf, "denoise", spy)
    return fired


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_engine_matches_pytorch(rfclip_planted, folder, monkeypatch, variant):
    ref, eng, vocab = _pair(rfclip_planted, folder, **VARIANTS[variant])
    text = rfclip_planted.text()[0].numpy()
    assert len(cluster_queries(text, HEAD["rf_cluster_threshold"])) == 6  # 12 queries in 6 clusters (not singletons)
    img = rfclip_planted.image()
    fired = _spy_denoise(monkeypatch)
    want = ref.logits(img, classes=vocab)
    calls = np.asarray(fired).reshape(-1, 12)  # (encoder passes, blocks)
    assert (calls.max(0) > 0).all() and (calls.min(0) < 1).all()  # the denoising fired in every block, not everywhere
    got = eng.logits(img, classes=vocab)
    assert got.shape == want.shape == (12, *img.shape[:2]) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    a, b = ref.segment(img, classes=vocab), eng.segment(img, classes=vocab)
    np.testing.assert_array_equal(b.labels, a.labels)
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
    assert len(np.unique(a.labels)) > 1 and b.info["backend"] == "onnxruntime"


def test_engine_ensembles_match_pytorch(rfclip_planted, folder):
    """Scales, flips and several images batched together (whole-image CLS per member and scale)."""
    ref, eng, vocab = _pair(rfclip_planted, folder, scales=(1.0, 0.75), flip=True, max_batch=3, **SLIDE)
    images = [rfclip_planted.image(), rfclip_planted.image(72, 80, seed=3)]
    for a, b in zip(ref.segment_batch(images, classes=vocab), eng.segment_batch(images, classes=vocab)):
        np.testing.assert_array_equal(b.labels, a.labels)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)


def test_member_context_is_the_whole_images_cls(rfclip_planted, folder):
    ref, eng, _ = _pair(rfclip_planted, folder, **SLIDE)
    pixels = np.random.RandomState(1).randn(3, 64, 93).astype(np.float32)
    got = eng.backend.member_context(pixels)["global_embedding"]
    want = ref.backend.member_context(torch.from_numpy(pixels))["global_embedding"].numpy()
    assert got.shape == want.shape == (64,)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert EngineSegmenter(folder, **HEAD).backend.member_context(pixels) is None  # whole image: its own CLS
    assert EngineSegmenter(folder, **HEAD, **SLIDE, rf_global_source="window").backend.member_context(pixels) is None


def test_cluster_tables_are_cached_per_text(rfclip_planted, folder):
    head = EngineSegmenter(folder, **HEAD).backend.rfclip
    text = rfclip_planted.text()[0].numpy()
    table = head.cluster_table(text)
    assert head.cluster_table(text.copy()) is table
    assert table.shape == (6, 3) and sorted(table[table >= 0].tolist()) == list(range(12))
    assert head.cluster_table(text[:5]) is not table


def test_fp16_engine_within_1e_2(rfclip_planted, tmp_path):
    from clipsam.export import export_engines

    export_engines(
        tmp_path,
        clip=rfclip_planted.clip,
        method="rfclip",
        preset="voc21",
        templates=TEMPLATES,
        precision="fp16",
        log=None,
        **rfclip_planted.overrides,
    )
    img = rfclip_planted.image()
    for variant in ("whole-image-own-cls", "sliding-image-cls"):
        ref, eng, vocab = _pair(rfclip_planted, tmp_path, precision="fp16", **VARIANTS[variant])
        np.testing.assert_allclose(eng.logits(img, classes=vocab), ref.logits(img, classes=vocab), atol=1e-2, rtol=0)
        assert eng.segment(img, classes=vocab).info["precision"] == "fp16"


def test_baked_fields_are_refused_and_host_fields_are_free(rfclip_planted, folder):
    for field, value in (
        ("rf_sink_sigma", 5.0),
        ("rf_sink_channels", (4, 50)),
        ("rf_denoise_alpha", 0.5),
        ("rf_denoise_exact_identity", True),
        ("rf_enhance_beta", 0.3),
        ("rf_renormalise_attention", True),
    ):
        with pytest.raises(ManifestMismatchError, match=field):
            EngineSegmenter(folder, **{field: value})
    cfg = dense_config("rfclip", "voc21", rf_sink_sigma=2.0)
    with pytest.raises(ManifestMismatchError, match="rfclip"):
        EngineSegmenter(folder, rfclip=cfg.rfclip)
    same = dict(rfclip_planted.overrides, rf_sink_channels=list(rfclip_planted.overrides["rf_sink_channels"]))
    eng = EngineSegmenter(folder, rf_text_alpha=0.5, rf_topk=3, rf_global_weight=0.2, rf_cluster_threshold=0.2, **same)
    assert eng.config.rfclip.rf_text_alpha == 0.5 and eng.with_options(rf_topk=1).config.rfclip.rf_topk == 1


def test_edited_baked_field_is_refused(folder, tmp_path):
    import json
    import shutil

    copy = shutil.copytree(folder, tmp_path / "edited")
    path = copy / "manifest.json"
    data = json.loads(path.read_text())
    data["dense_config"]["rf_sink_sigma"] = 5.0
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestMismatchError, match=r"dense_config.rf_sink_sigma 5.0.*exported for .* 1.5"):
        EngineSegmenter(copy)


def test_runs_without_torch(rfclip_planted, folder, tmp_path):
    """Sliding windows with the whole image's CLS and PAMR in a process where importing torch raises."""
    import subprocess
    import sys

    from .test_no_torch import SCRIPT

    blocked = SCRIPT.split("folder, image, out")[0]  # the import blocker and the imports of test_no_torch.py
    script = blocked + (
        "folder, image, out = sys.argv[1:4]\n"
        "seg = EngineSegmenter(folder, short_side=64, slide_crop=48, slide_stride=32, pamr_iters=10)\n"
        "np.save(out, seg.segment(np.load(image), classes=['cat', 'sofa', 'grass']).labels)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in BLOCKED]\n"
    )
    (tmp_path / "run.py").write_text(script)
    np.save(tmp_path / "image.npy", rfclip_planted.image())
    proc = subprocess.run(
        [sys.executable, "run.py", str(folder), "image.npy", "labels.npy"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    eng = EngineSegmenter(folder, short_side=64, slide_crop=48, slide_stride=32, pamr_iters=10)
    want = eng.segment(rfclip_planted.image(), classes=["cat", "sofa", "grass"]).labels
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), want)
