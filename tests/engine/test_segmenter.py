"""EngineSegmenter (ONNX Runtime) against the PyTorch Segmenter and Sam2Refiner, end to end, on a real photograph."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.config import dense_config
from clipsam.engine import EngineSegmenter
from clipsam.errors import ConfigError, EngineLimitError, ManifestMismatchError
from clipsam.postprocess import postprocess
from clipsam.refine import RefineConfig
from clipsam.result import SegmentationResult

from ..engines import TEMPLATES

torch = pytest.importorskip("torch")

# engine name, method, preset, host overrides (small images keep the torch reference fast)
CASES = [
    ("resclip", "resclip", "voc21", dict(short_side=64)),
    ("resclip", "resclip", "voc21", dict(short_side=96, slide_crop=64, slide_stride=32)),
    ("naclip", "naclip", "voc21", dict(short_side=80)),  # whole image + final PAMR(10)
    ("clearclip", "clearclip", "context59", dict(short_side=96, slide_crop=56, slide_stride=28)),  # padded crops
    ("sclip", "sclip", "voc21", dict(short_side=80, slide_crop=48, slide_stride=24)),
]
REFINE = RefineConfig(
    stuff_classes=(0,), min_confidence=0.0, min_mask_score=0.0, negative_points=True, max_prompts_per_image=6
)


def _torch_segmenter(tiny_clip, method, preset, max_batch=8, refiner=None, refine_config=None, **overrides):
    from clipsam.segmenter import Segmenter

    return Segmenter(
        tiny_clip,
        dense_config(method, preset, templates=TEMPLATES, **overrides),
        max_batch=max_batch,
        refiner=refiner,
        refine_config=refine_config,
    )


def _labels(seg, logits, vocab):
    cfg = seg.config
    return postprocess(logits, vocab.query_to_class, vocab.num_classes, cfg.logit_scale, cfg.prob_thd, cfg.area_thd)


@pytest.mark.parametrize("name,method,preset,overrides", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_logits_and_labels_match_pytorch(engine_dir, tiny_clip, chelsea_small, name, method, preset, overrides):
    ref_seg = _torch_segmenter(tiny_clip, method, preset, **overrides)
    eng = EngineSegmenter(engine_dir(name), **overrides)
    vocab = ref_seg.vocabulary()
    ref = ref_seg.logits(chelsea_small)
    got = eng.logits(chelsea_small)
    assert got.shape == ref.shape == (vocab.num_queries, *chelsea_small.shape[:2]) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    agree = (_labels(ref_seg, ref, vocab)[0] == _labels(ref_seg, got, vocab)[0]).mean()
    assert agree >= 0.999
    res = eng.segment(chelsea_small)
    assert np.array_equal(res.labels, _labels(ref_seg, got, vocab)[0])


@pytest.mark.parametrize(
    "name,method,overrides",
    [
        ("resclip", "resclip", dict(short_side=64, scales=(1.0, 0.75), flip=True)),  # members, prob_mean
        ("sclip", "sclip", dict(short_side=64, slide_crop=0, scales=(1.0, 1.25), combine="logit_mean")),  # one-step
        ("clearclip", "clearclip", dict(short_side=80, slide_crop=56, slide_stride=40, flip=True)),
    ],
)
def test_batched_members_match_pytorch_segment_batch(engine_dir, tiny_clip, chelsea_small, name, method, overrides):
    images = [chelsea_small, np.ascontiguousarray(chelsea_small[::-1]), chelsea_small[:64, :100]]
    ref = _torch_segmenter(
        tiny_clip, method, "voc21" if method != "clearclip" else "context59", max_batch=2, **overrides
    ).segment_batch(images, classes=["cat", "grass", "wall", "sky"])
    got = EngineSegmenter(engine_dir(name), max_batch=2, **overrides).segment_batch(
        images, classes=["cat", "grass", "wall", "sky"]
    )
    for r, g in zip(ref, got):
        assert (r.labels == g.labels).mean() >= 0.999
        np.testing.assert_allclose(g.scores, r.scores, atol=1e-4)
        assert g.info["max_batch"] == r.info["max_batch"] == 2


def test_text_embeddings_match_pytorch(engine_dir, tiny_clip):
    ref_seg = _torch_segmenter(tiny_clip, "resclip", None)
    eng = EngineSegmenter(engine_dir("resclip"), preset=dense_config("resclip", "voc21").preset)
    vocab = eng.vocabulary(classes=["cat", "tv monitor, television", "Café", "a" * 120])
    ref = ref_seg.text_embeddings(vocab).numpy()
    got = eng.text_embeddings(vocab)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    assert eng.text_embeddings(vocab) is got  # cached per vocabulary


def test_prompt_options_match_pytorch_and_calibration_is_refused(engine_dir, tiny_clip):
    from clipsam import PromptConfig
    from clipsam.errors import ConfigError

    prompts = PromptConfig(context_prompts="default", disambiguate="default", descriptions="voc20")
    ref_seg = _torch_segmenter(tiny_clip, "resclip", None).with_options(prompts=prompts)
    eng = EngineSegmenter(engine_dir("resclip"), prompts=prompts)
    vocab = eng.vocabulary(classes=["cat", "mouse", "tv monitor"])
    np.testing.assert_allclose(eng.text_embeddings(vocab), ref_seg.text_embeddings(vocab).numpy(), atol=1e-5, rtol=0)
    assert not np.allclose(eng.text_embeddings(vocab), eng.with_options(prompts=PromptConfig()).text_embeddings(vocab))
    single = EngineSegmenter(engine_dir("resclip"), prompts=PromptConfig(templates="single"))
    assert len(single.templates) == 1 and len(single.with_options(templates="openai7").templates) == 7
    with pytest.raises(ConfigError, match="not available with exported engines"):
        EngineSegmenter(engine_dir("resclip"), calibration="knn")


def test_fp16_engines_within_1e_2(engine_dir, tiny_clip, chelsea_small):
    ref_seg = _torch_segmenter(tiny_clip, "resclip", "voc21", short_side=64)
    eng = EngineSegmenter(engine_dir("resclip_fp16"), short_side=64, precision="fp16")
    ref, got = ref_seg.logits(chelsea_small), eng.logits(chelsea_small)
    np.testing.assert_allclose(got, ref, atol=1e-2, rtol=0)
    assert eng.segment(chelsea_small).info["precision"] == "fp16"


def test_sam2_refinement_matches_pytorch(engine_dir, tiny_clip, tiny_sam2, chelsea_small, voc):
    import cv2

    photo = cv2.resize(voc["rgb"], (120, 90), interpolation=cv2.INTER_AREA)
    images = [chelsea_small, photo]
    ref = _torch_segmenter(
        tiny_clip, "resclip", "voc21", short_side=64, refiner=tiny_sam2, refine_config=REFINE
    ).segment_batch(images)
    got = EngineSegmenter(engine_dir("resclip"), short_side=64, refine=REFINE).segment_batch(images)
    for g, r in zip(got, ref):
        assert (g.dense_labels == r.dense_labels).mean() >= 0.999
        assert (g.labels == r.labels).mean() >= 0.999
        assert [i.class_id for i in g.instances] == [i.class_id for i in r.instances]
        np.testing.assert_allclose([i.score for i in g.instances], [i.score for i in r.instances], atol=1e-4)
        assert g.info["refine"] == r.info["refine"] == {"sam2": "sam2.1_hiera_t", "instances": len(r.instances)}
    assert sum(len(r.instances) for r in got) > 0


def test_sam2_embeddings_and_masks_match_pytorch(engine_dir, tiny_sam2, voc):
    from clipsam.refine import extract_prompts

    from ..utils import dense_from_gt

    eng = EngineSegmenter(engine_dir("resclip"), refine=True)
    img, gt = voc["rgb"][:200, :300], voc["gt"][:200, :300]
    ours, ref = eng.refiner.embed_images([img])[0], tiny_sam2.embed_images([img])[0]
    np.testing.assert_allclose(ours.image_embed, ref.image_embed.numpy(), atol=1e-4, rtol=0)
    for a, b in zip(ours.high_res_feats, ref.high_res_feats):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4, rtol=0)
    prompts = extract_prompts(gt, dense_from_gt(gt), RefineConfig(use_boxes=True, negative_points=True))
    assert len(prompts) > 1
    for multimask in (True, False):  # single mask: SAM2's dynamic stability fallback, ported to numpy
        m1, s1 = eng.refiner.predict(ours, prompts, multimask)
        m2, s2 = tiny_sam2.predict(ref, prompts, multimask)
        np.testing.assert_allclose(s1, s2, atol=1e-4)
        assert (m1 == m2).mean() >= 0.999


def test_result_api_and_info(engine_dir, chelsea_small, tmp_path):
    eng = EngineSegmenter(engine_dir("resclip"), short_side=64)
    res = eng.segment(chelsea_small, classes="cat, grass, sky")
    assert isinstance(res, SegmentationResult) and res.classes == ("cat", "grass", "sky")
    assert res.labels.shape == chelsea_small.shape[:2] and res.labels.dtype == np.int32
    assert res.info["backend"] == "onnxruntime" and res.info["providers"] == ["CPUExecutionProvider"]
    assert res.info["method"] == "resclip" and "refine" not in res.info and res.dense_labels is None
    assert set(eng.providers) >= {"clip_text", "clip_dense_trunk", "clip_dense_pass1", "clip_dense_pass2"}
    assert all(p == ("CPUExecutionProvider",) for p in eng.providers.values())
    paths = res.save(tmp_path, "cat")
    assert paths["labels"].is_file() and paths["summary"].is_file()
    batch = eng.segment_batch([chelsea_small, chelsea_small[:, ::-1]], classes=["cat", "grass"])
    assert len(batch) == 2 and np.array_equal(batch[0].labels, eng.segment(chelsea_small, ["cat", "grass"]).labels)
    stream = list(eng.segment_stream([chelsea_small, chelsea_small[:, ::-1]], classes=["cat", "grass"], batch_size=1))
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(stream, batch))
    small = eng.with_options(short_side=32)
    assert small.config.short_side == 32 and eng.config.short_side == 64 and small.text_cache is eng.text_cache
    with pytest.raises(ConfigError, match="slide_crop=8 is smaller than this model's 16x16 patch"):
        eng.with_options(slide_crop=8, slide_stride=4)
    # the graphs were exported for resclip: another method is refused, naming the export (not just relabelled)
    with pytest.raises(
        ManifestMismatchError, match=r"exported for method 'resclip', but method 'naclip'.*--method naclip"
    ):
        eng.with_options(method="naclip")
    with pytest.raises(ManifestMismatchError, match="preset 'context60' was asked for"):
        eng.with_options(preset="context60")
    with pytest.raises(ManifestMismatchError, match="exported for preset 'voc21', but preset None was asked for"):
        EngineSegmenter(engine_dir("resclip"), preset=None)  # no preset (open vocabulary) asked: not the folder's
    same = eng.with_options(method="resclip", prob_thd=0.3)
    assert same.config.prob_thd == 0.3 and same.config.short_side == 64  # its own method: the other options kept


def test_more_queries_than_the_tensorrt_profiles_serve_are_refused(engine_dir, monkeypatch):
    """TensorRT runs only the export's profile shapes (``--max-queries``, 512 by default); other providers take
    any number. No GPU here: a session is made to report the TensorRT provider."""
    eng = EngineSegmenter(engine_dir("resclip"), short_side=32)
    limit = eng.manifest.limits["max_queries"]
    many = [f"thing {i}" for i in range(limit + 1)]
    assert eng.vocabulary(classes=many).num_queries == limit + 1  # the CPU provider serves them
    monkeypatch.setattr(eng._sessions["clip_dense_pass1"], "providers", ("TensorrtExecutionProvider",))
    with pytest.raises(EngineLimitError, match=rf"{limit + 1} queries .* at most {limit} .*clip_dense_pass1"):
        eng.segment(np.zeros((32, 32, 3), np.uint8), classes=many)
    assert eng.vocabulary(classes=many[:limit]).num_queries == limit


def test_thread_counts_onnx_runtime_cannot_start_are_refused(engine_dir):
    with pytest.raises(ConfigError, match=r"intra_op_threads=1000000000 is more threads.*at most 1024"):
        EngineSegmenter(engine_dir("resclip"), intra_op_threads=10**9)
    assert EngineSegmenter(engine_dir("resclip"), intra_op_threads=1).provider_config.intra_op_threads == 1


def test_io_binding_path_gives_the_same_logits(engine_dir, chelsea_small):
    # IO binding is the CUDA path; bound to host memory it runs (and is checked) on the CPU too
    plain = EngineSegmenter(engine_dir("resclip"), short_side=64, io_binding=False)
    bound = EngineSegmenter(engine_dir("resclip"), short_side=64, io_binding=True)
    assert all(s.io_binding for s in bound._sessions.values())
    np.testing.assert_array_equal(bound.logits(chelsea_small), plain.logits(chelsea_small))


def test_windows_beyond_max_grid_are_refused(engine_dir, chelsea_small):
    eng = EngineSegmenter(engine_dir("naclip"), short_side=1100)  # whole image: 1100 x 1650 -> 68 x 103 patches
    with pytest.raises(EngineLimitError, match="larger than the 64 patches a side"):
        eng.segment(chelsea_small)
