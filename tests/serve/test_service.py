"""The replica's core without Ray or HTTP: readiness after warm-up, batches grouped by (vocabulary, options) and
equal to segmenting alone, failures isolated per request, per-request variants, description and statistics."""

from __future__ import annotations

import types

import numpy as np
import pytest

from clipsam.config import dense_config
from clipsam.errors import ConfigError
from clipsam.serve.errors import ServeError
from clipsam.serve.service import Job, ServeConfig, Service
from clipsam.vocabulary import Vocabulary

from .helpers import assert_same


@pytest.fixture(scope="module")
def seg(make_segmenter):
    return make_segmenter("resclip", "voc21", short_side=64)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((48, 64, 3), (48, 64, 3), (70, 40, 3))]


def test_ready_only_after_warmup(seg):
    svc = Service(seg, ServeConfig(warmup_sizes=((32, 48),)))
    assert not svc.ready and svc.describe()["ready"] is False
    with pytest.raises(ServeError) as e:
        svc.require_ready()
    assert (e.value.status, e.value.code) == (503, "not_ready")
    info = svc.warmup()
    assert svc.ready and info["sizes"] == [[32, 48]] and info["vocabulary"] == 21 and info["seconds"] > 0
    svc.require_ready()


def test_batches_group_by_vocabulary_and_options_and_equal_single_calls(seg, images):
    svc = Service(seg, ServeConfig())
    cats, dogs = Vocabulary.from_names("cat, grass"), Vocabulary.from_names(["dog", ["sky", "clouds"]])
    thd = (("prob_thd", 0.4),)
    jobs = [
        Job(images[0], cats, ()),
        Job(images[1], dogs, ()),
        Job(images[2], cats, ()),
        Job(images[1], cats, thd),
        Job(images[0], dogs, ()),
    ]
    out = svc.run_batch(jobs)
    assert all(o.error is None for o in out)
    assert [o.batch["group"] for o in out] == [2, 2, 2, 1, 2] and {o.batch["size"] for o in out} == {5}
    assert len({o.batch["id"] for o in out}) == 1
    for job, o in zip(jobs, out):
        ref = (seg.with_options(prob_thd=0.4) if job.options else seg).segment(job.rgb, classes=job.vocab)
        assert_same(o.result, ref)
    assert out[3].result.info["config"]["prob_thd"] == 0.4
    stats = svc.stats()
    assert stats["batches"] == 1 and stats["batch_sizes"] == {"5": 1} and stats["group_sizes"] == {"1": 1, "2": 2}


def test_a_failure_stays_with_its_request(seg, images):
    svc = Service(seg, ServeConfig())
    cats = Vocabulary.from_names("cat, grass")
    thin = np.zeros((2, 300, 3), np.uint8)  # thinner than a patch once resized: fails inside segment_batch
    out = svc.run_batch([Job(images[0], cats, ()), Job(thin, cats, ()), Job(images[2], cats, ())])
    assert out[1].result is None and (out[1].error.status, out[1].error.code) == (400, "malformed_image")
    assert "smaller than one 16x16 patch" in out[1].error.message
    for i in (0, 2):
        assert out[i].error is None
        assert_same(out[i].result, seg.segment(images[i], classes=cats))
    assert out[1].batch == out[0].batch == {"id": 1, "size": 3, "group": 3}
    broken = types.SimpleNamespace(**{**seg.__dict__})  # a backend failing outright: a 500, for that group only
    svc2 = Service(seg, ServeConfig())
    svc2.variant = lambda options: broken if options else seg
    broken.segment_batch = broken.segment = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("CUDA error: boom"))
    out = svc2.run_batch([Job(images[0], cats, (("prob_thd", 0.2),)), Job(images[1], cats, ())])
    assert (out[0].error.status, out[0].error.code) == (500, "segmentation_failed") and "boom" in out[0].error.message
    assert out[1].error is None


def test_variants_keep_the_server_overrides_and_are_cached(seg):
    svc = Service(seg, ServeConfig(methods=("sclip",), presets=("context60",)))
    assert svc.policy() == {
        "methods": ("resclip", "sclip"),
        "presets": ("voc21", "context60"),
        "templates": ("openai80", "openai7", "single"),
        "instances": False,
    }
    assert svc.variant(()) is seg
    v = svc.variant((("method", "sclip"),))
    assert v is svc.variant((("method", "sclip"),)) and v.model is seg.model
    want = dense_config("sclip", "voc21", short_side=64)
    assert v.config.replace(templates=want.templates) == want  # the server's short_side is kept
    p = svc.variant((("preset", "context60"), ("prob_thd", 0.3)))
    assert p.config == dense_config("resclip", "context60", short_side=64, prob_thd=0.3, templates=p.config.templates)
    assert svc.vocabulary(None, (("preset", "context60"),)).num_classes == 60
    assert svc.vocabulary(None, ()).num_classes == 21


def test_default_vocabulary_and_none(make_segmenter, seg):
    svc = Service(seg, ServeConfig(classes=("cat, kitten", "dog")))
    assert svc.vocabulary(None, ()).queries == ("cat", "kitten", "dog")
    assert svc.describe()["vocabulary"] == ["cat", "dog"]
    open_vocab = Service(make_segmenter("resclip", None, short_side=64), ServeConfig())
    with pytest.raises(ServeError, match="no default vocabulary") as e:
        open_vocab.vocabulary(None, ())
    assert e.value.code == "empty_vocabulary"
    assert open_vocab.describe()["vocabulary"] is None and open_vocab.describe()["preset"] is None


def test_config_errors(seg):
    with pytest.raises(ConfigError, match="at least max_batch"):
        ServeConfig(max_batch=8, max_ongoing_requests=4)
    with pytest.raises(ConfigError, match="max_batch must be >= 1"):
        ServeConfig(max_batch=0)
    assert ServeConfig(max_batch=16).ongoing == 64 and ServeConfig().ongoing == 32
    with pytest.raises(ConfigError, match="unknown method"):
        Service(seg, ServeConfig(methods=("segformer",)))
    engine_like = types.SimpleNamespace(config=seg.config, manifest=object(), refiner=None)
    with pytest.raises(ConfigError, match="engine folder serves the method and preset it was exported for"):
        Service(engine_like, ServeConfig(methods=("sclip",)))


def test_default_batch_size_follows_the_device(seg):
    from clipsam.serve.service import _on_gpu

    assert Service(seg, ServeConfig()).max_batch == 1  # the CPU: batching costs throughput (bench_serve)
    assert Service(seg, ServeConfig(max_batch=6)).max_batch == 6
    assert _on_gpu(types.SimpleNamespace(device=types.SimpleNamespace(type="cuda")))
    engine_like = types.SimpleNamespace(
        provider_config=types.SimpleNamespace(providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    )
    assert _on_gpu(engine_like) and not _on_gpu(types.SimpleNamespace(device=seg.device))


def test_describe(seg):
    d = Service(seg, ServeConfig(max_batch=4, batch_wait_ms=5), replica="r1").describe()
    assert (d["backend"], d["method"], d["preset"], d["precision"], d["device"], d["replica"]) == (
        "pytorch",
        "resclip",
        "voc21",
        "fp32",
        "cpu",
        "r1",
    )
    assert d["batching"] == {
        "max_batch": 4,
        "batch_wait_ms": 5,
        "max_ongoing_requests": 32,
        "encoder_max_batch": seg.max_batch,
    }
    assert d["choices"]["return"] == ["labels", "rle", "scores", "overlay"] and d["auth"] is False


def test_engine_backend(tiny_clip, tmp_path_factory, images):
    """An engine folder (ONNX Runtime) served: same results as the engine segmenter in process, described as such."""
    pytest.importorskip("onnx")
    from clipsam.engine.segmenter import EngineSegmenter

    from .. import engines

    eng = EngineSegmenter(engines.build("naclip", tiny_clip, tmp_path_factory), short_side=64)
    svc = Service(eng, ServeConfig(warmup_sizes=((32, 48),)))
    svc.warmup()
    cats = Vocabulary.from_names("cat, grass")
    out = svc.run_batch([Job(images[0], cats, ()), Job(images[2], cats, (("templates", "single"),))])
    assert_same(out[0].result, eng.segment(images[0], classes=cats))
    assert_same(out[1].result, eng.with_options(templates="single").segment(images[2], classes=cats))
    d = svc.describe()
    assert (d["backend"], d["method"], d["device"]) == ("onnxruntime", "naclip", None)
    assert d["providers"] == ["CPUExecutionProvider"]


def test_sam2_instances_through_the_wire(tiny_clip, images):
    """With a SAM2 refiner, return=instances sends the instances and the dense labels; decoded, they equal the
    in-process result's."""
    pytest.importorskip("sam2")
    from clipsam.segmenter import Segmenter
    from clipsam.serve.codec import decode_result, encode_result

    from .. import engines

    seg = Segmenter(
        tiny_clip,
        dense_config("resclip", "voc21", short_side=64, templates=("a photo of a {}.",)),
        refiner=engines.tiny_sam2(),
    )
    svc = Service(seg, ServeConfig())
    assert svc.policy()["instances"] is True and "instances" in svc.describe()["choices"]["return"]
    vocab = Vocabulary.from_names("cat, grass, sky")
    res = svc.run_batch([Job(images[0], vocab, ())])[0].result
    ref = seg.segment(images[0], classes=vocab)
    got = decode_result(encode_result(res, ("labels", "scores", "instances")), images[0])
    assert_same(got, ref)
    assert np.array_equal(got.dense_labels, ref.dense_labels)
    assert got.instances_json() == ref.instances_json() and len(got.instances) == len(ref.instances) > 0


def test_an_image_beyond_the_engines_limit_is_a_413():
    from clipsam.errors import EngineLimitError
    from clipsam.serve.errors import error_status

    err = error_status(EngineLimitError("a 64x1200-pixel window is a 4x75 patch grid, larger than the 64 patches."))
    assert (err.status, err.code) == (413, "image_too_large") and "larger than the 64 patches. Send" in err.message
    assert "less elongated" in err.message and "--max-side" in err.message


def test_an_engine_server_answers_413_for_an_elongated_image(engine_dir):
    from clipsam.engine import EngineSegmenter

    engine = EngineSegmenter(engine_dir("resclip"), short_side=64)  # 64 patches a side at most (1024 pixels)
    svc = Service(engine, ServeConfig())
    wide = np.zeros((64, 1200, 3), np.uint8)  # resized to 64 x 1200: a 4 x 75 patch grid
    out = svc.run_batch([Job(wide, Vocabulary.from_names("cat"), ())])
    assert (out[0].error.status, out[0].error.code) == (413, "image_too_large"), out[0].error
    assert "larger than the 64 patches a side" in out[0].error.message
