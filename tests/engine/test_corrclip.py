"""CorrCLIP on exported engines (``dino_features`` + host region steps + ``clip_dense_corrclip``) against the
PyTorch Segmenter, on ``tests/dense/test_corrclip.py``'s planted inputs (its module docstring says why and how):
the narrow timm DINO with patch 8, the image with two alike striped regions that merge, planted query embeddings.

One folder (masks given per call) serves every variant; merging, the scope rule and the windows are host settings,
given to both backends as overrides. Every window of the 100 x 150 image is 100 pixels tall and is padded to 112.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from clipsam.config import dense_config
from clipsam.errors import ConfigError, ManifestMismatchError
from clipsam.masks import paint_masks

from ..dense.test_corrclip import (  # noqa: F401  (module fixtures: the DINO, the planted text, denormals)
    CLASSES,
    _bool_masks,
    _flush_denormals,
    _image,
    _merge_eps,
    _planted_text,
    _text,
    small_dino,
)

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

WINDOWS = dict(short_side=100, slide_crop=112, slide_stride=56, prob_thd=0.0)
TEMPLATES = ("a photo of a {}.",)


@pytest.fixture(scope="module")
def dino(request):
    """``tests/dense/test_corrclip.py``'s narrow DINO (its module fixture ``small_dino``)."""
    return request.getfixturevalue("small_dino")


@pytest.fixture(scope="module")
def folder(tiny_clip, dino, tmp_path_factory):
    from clipsam.export import export_engines

    out = tmp_path_factory.mktemp("engine_corrclip")
    export_engines(
        out,
        clip=tiny_clip,
        method="corrclip",
        preset="voc21",
        dino=dino,
        corr_mask_source="given",
        templates=TEMPLATES,
        log=None,
    )
    return out


def _pair(tiny_clip, dino, folder, **overrides):
    """(PyTorch Segmenter, EngineSegmenter) with the planted text and the same settings."""
    from clipsam.engine import EngineSegmenter
    from clipsam.segmenter import Segmenter

    kw = {**WINDOWS, **overrides}
    cfg = dense_config("corrclip", "voc21", corr_mask_source="given", templates=TEMPLATES).replace(**kw)
    ref = Segmenter(copy.copy(tiny_clip), cfg, dino=dino)
    eng = EngineSegmenter(folder, **kw)
    text = _planted_text()
    ref.text_embeddings = lambda v, progress=None: text
    eng.text_embeddings = lambda v, progress=None: text.numpy()
    return ref, eng


def _spy_merges(monkeypatch):
    """Record (regions, components) of every merge the engine's host steps make."""
    import clipsam.ops.corrclip as oc

    seen: list[tuple[int, int]] = []
    orig = oc.merge_regions

    def spy(ids, feats, eps, distance, rule):
        out = orig(ids, feats, eps, distance, rule)
        seen.append((len(np.unique(ids)), len(np.unique(out))))
        return out

    monkeypatch.setattr(oc, "merge_regions", spy)
    return seen


def _compare(ref, eng, img, masks):
    want = ref.logits(img, classes=CLASSES, masks=masks)
    got = eng.logits(img, classes=CLASSES, masks=masks)
    assert got.shape == want.shape == (5, *img.shape[:2]) and got.dtype == np.float32
    delta = float(np.abs(got - want).max())
    assert delta <= 1e-4, delta
    a, b = ref.segment(img, classes=CLASSES, masks=masks), eng.segment(img, classes=CLASSES, masks=masks)
    np.testing.assert_array_equal(b.labels, a.labels)
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
    assert b.info["backend"] == "onnxruntime" and b.info["corrclip"] == a.info["corrclip"]
    return a, b


def test_engine_matches_pytorch_with_planted_masks(tiny_clip, dino, folder, monkeypatch):
    masks = _bool_masks()
    m0 = paint_masks(masks)
    eps, lo, hi = _merge_eps(tiny_clip, dino, m0)
    ref, eng = _pair(tiny_clip, dino, folder, corr_merge_eps=eps)
    merges = _spy_merges(monkeypatch)
    a, _ = _compare(ref, eng, _image(), list(masks))
    assert any(after < before for before, after in merges)  # the planted pair merged in the engine's host step
    assert any(before >= 4 and after > 2 for before, after in merges)  # ... and not every region with it
    assert len(np.unique(a.labels)) > 1
    for v in np.unique(m0)[1:]:
        assert len(np.unique(a.labels[m0 == v])) == 1  # voted
    # an instance map without 0 (the smallest id is unsegmented), and an edge where nothing merges
    _compare(ref, eng, _image(), m0 + 3)
    ref0, eng0 = _pair(tiny_clip, dino, folder, corr_merge_eps=0.0)
    _compare(ref0, eng0, _image(), list(masks))


def test_engine_without_masks_matches_pytorch(tiny_clip, dino, folder):
    ref, eng = _pair(tiny_clip, dino, folder, corr_mask_source="none")
    a, b = _compare(ref, eng, _image(), None)
    assert b.info["corrclip"] == {"masks": "none", "regions": 0}
    assert len(np.unique(a.labels)) > 1


def test_engine_batches_scales_and_flips_like_pytorch(tiny_clip, dino, folder):
    """Windows of several images, scales and flips batched together (region counts differ across a batch: the mask
    class tokens are padded to the batch's largest)."""
    ref, eng = _pair(tiny_clip, dino, folder, scales=(1.0, 0.75), flip=True, corr_merge_eps=0.05)
    images = [_image(), _image(seed=3)[:90, :140]]
    masks = [_bool_masks(), _bool_masks()[[0, 2], :90, :140]]
    for a, b in zip(
        ref.segment_batch(images, classes=CLASSES, masks=masks), eng.segment_batch(images, classes=CLASSES, masks=masks)
    ):
        np.testing.assert_array_equal(b.labels, a.labels)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)


def test_baked_fields_and_missing_sam2_graphs_are_refused(folder, monkeypatch):
    import clipsam.engine.segmenter as es
    from clipsam.engine import EngineSegmenter

    with pytest.raises(ManifestMismatchError, match="corr_branch_weights"):
        EngineSegmenter(folder, corr_branch_weights=(1.0, 0.25))
    with pytest.raises(ManifestMismatchError, match="corr_spatial_blocks"):
        EngineSegmenter(folder, corr_spatial_blocks=(4, 5))
    with monkeypatch.context() as m:
        m.setattr(es, "GraphSession", lambda *a, **k: pytest.fail("a graph session was loaded"))
        with pytest.raises(ConfigError, match="SAM2 graphs"):
            EngineSegmenter(folder, corr_mask_source="sam2")  # refused before any graph loads
    eng = EngineSegmenter(folder, corr_merge_eps=0.3, corr_scope_tau=2.0, corr_mask_source="none")  # host fields
    assert eng.config.corrclip.corr_merge_eps == 0.3
    with pytest.raises(ConfigError, match="SAM2 graphs"):
        eng.with_options(corr_mask_source="sam2")


NO_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    BLOCKED = ("torch", "torchvision", "open_clip", "sam2", "triton", "timm", "scipy")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    from clipsam.engine import EngineSegmenter

    folder, image, masks, text, out = sys.argv[1:6]
    seg = EngineSegmenter(folder, short_side=100, slide_crop=112, slide_stride=56, prob_thd=0.0, corr_merge_eps=0.05)
    t = np.load(text)
    seg.text_embeddings = lambda v, progress=None: t
    res = seg.segment(np.load(image), classes=[["sky", "wall"], "cat", "dog", "tree"], masks=np.load(masks))
    np.save(out, res.scores)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
""")


def test_engine_runs_without_torch(tiny_clip, dino, folder, tmp_path):
    files = {k: tmp_path / f"{k}.npy" for k in ("image", "masks", "text", "out")}
    np.save(files["image"], _image())
    np.save(files["masks"], paint_masks(_bool_masks()))
    np.save(files["text"], _planted_text().numpy())
    script = tmp_path / "run.py"
    script.write_text(NO_TORCH)
    args = [str(folder)] + [str(files[k]) for k in ("image", "masks", "text", "out")]
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, cwd=str(tmp_path)
    )
    assert proc.returncode == 0, f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
    ref, _ = _pair(tiny_clip, dino, folder, corr_merge_eps=0.05)
    want = ref.segment(_image(), classes=CLASSES, masks=paint_masks(_bool_masks())).scores
    np.testing.assert_allclose(np.load(files["out"]), want, atol=1e-4)


def test_automatic_masks_on_the_sam2_graphs(tiny_clip, dino, tmp_path_factory):
    """A folder exported with SAM2 (hiera-t at 256 px, random weights) makes CorrCLIP's automatic masks on its graphs
    (``OrtSam2Refiner.point_logits``): the same instance maps and labels as the PyTorch Segmenter on the same SAM2
    (filters off, 3 x 3 points, so that random weights still give masks)."""
    import warnings

    from clipsam.engine import EngineSegmenter
    from clipsam.export import export_engines
    from clipsam.segmenter import Segmenter

    from ..engines import tiny_sam2

    sam2 = tiny_sam2()
    out = tmp_path_factory.mktemp("engine_corrclip_sam2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_engines(
            out, clip=tiny_clip, method="corrclip", preset="voc21", dino=dino, sam2=sam2, templates=TEMPLATES, log=None
        )
    amg = dict(
        corr_amg_points_per_side=3,
        corr_amg_pred_iou_thresh=0.0,
        corr_amg_stability_thresh=0.0,
        corr_amg_box_nms_thresh=1.0,
    )
    cfg = dense_config("corrclip", "voc21", templates=TEMPLATES).replace(**WINDOWS, **amg)
    ref = Segmenter(copy.copy(tiny_clip), cfg, dino=dino, mask_sam2=sam2)
    eng = EngineSegmenter(out, **WINDOWS, **amg)
    assert eng.refiner is None and eng.automask is not None
    text = _planted_text()
    ref.text_embeddings = lambda v, progress=None: text
    eng.text_embeddings = lambda v, progress=None: text.numpy()
    img = _image()
    ((want, e_ref),) = ref.automask.generate([img])
    ((got, e_eng),) = eng.automask.generate([img])
    (m_ref, iou_ref), (m_eng, iou_eng) = (
        ref.automask.masks(e_ref, img.shape[:2]),
        eng.automask.masks(e_eng, img.shape[:2]),
    )
    assert len(m_ref) == len(m_eng) == 9  # one mask per point, none filtered
    np.testing.assert_allclose(iou_eng, iou_ref, atol=1e-4, rtol=0)
    assert (m_eng == m_ref).mean() > 0.999
    assert want.max() >= 2  # several automatic masks painted
    assert (got == want).mean() > 0.999  # binarised at logit 0: a pixel within float error of 0 may differ
    a, b = ref.segment(img, classes=CLASSES), eng.segment(img, classes=CLASSES)
    assert b.info["corrclip"]["masks"] == "sam2" and a.info["corrclip"] == b.info["corrclip"]
    assert (a.labels == b.labels).mean() > 0.999


def test_fp16_engine_and_warmup(tiny_clip, dino, tmp_path_factory):
    """An fp16 folder (IO stays fp32) validates at export, warms up with given masks, and stays close to the fp32
    PyTorch backend on the planted inputs (fp16 features can move a DINO similarity across the scope's mean, so
    labels are compared by agreement, not equality)."""
    from clipsam.engine import EngineSegmenter
    from clipsam.export import export_engines

    out = tmp_path_factory.mktemp("engine_corrclip_fp16")
    export_engines(
        out,
        clip=tiny_clip,
        method="corrclip",
        preset="voc21",
        dino=dino,
        corr_mask_source="given",
        precision="fp16",
        templates=TEMPLATES,
        log=None,
    )
    eng = EngineSegmenter(out, precision="fp16", **WINDOWS, corr_merge_eps=0.05)
    assert eng.warmup(classes=CLASSES, sizes=[(60, 80)])["sizes"] == [[60, 80]]
    ref, _ = _pair(tiny_clip, dino, folder=out, corr_merge_eps=0.05)
    eng.text_embeddings = lambda v, progress=None: _planted_text().numpy()
    masks = list(_bool_masks())
    want = ref.logits(_image(), classes=CLASSES, masks=masks)
    got = eng.logits(_image(), classes=CLASSES, masks=masks)
    assert np.abs(got - want).max() < 2e-2
    a, b = ref.segment(_image(), classes=CLASSES, masks=masks), eng.segment(_image(), classes=CLASSES, masks=masks)
    assert (a.labels == b.labels).mean() > 0.95
