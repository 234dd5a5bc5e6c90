"""Every way an engine folder or a provider request can be wrong gives a clear error naming the fix."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from clipsam.engine import EngineSegmenter
from clipsam.errors import ClipSamError, EngineError, EngineFileError, ManifestMismatchError, ProviderError


@pytest.fixture
def folder(engine_dir, tmp_path):
    """A private copy of a CLIP-only engine folder (sclip, voc21), free to break."""
    dst = tmp_path / "engines"
    shutil.copytree(engine_dir("sclip"), dst)
    return dst


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_missing_onnx_file(folder):
    (folder / "clip_dense.onnx").unlink()
    with pytest.raises(EngineFileError, match=r"engine file missing: .*clip_dense.onnx .*export the engines again"):
        EngineSegmenter(folder)


def test_truncated_onnx_file(folder):
    path = folder / "clip_text.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(EngineFileError, match="truncated or was replaced"):
        EngineSegmenter(folder)


def test_corrupt_onnx_file(folder):
    path = folder / "clip_dense.onnx"
    data = bytearray(path.read_bytes())
    data[: len(data) // 2] = b"\x07" * (len(data) // 2)  # same size, garbage
    path.write_bytes(bytes(data))
    with pytest.raises(EngineFileError, match="does not match its SHA-256"):
        EngineSegmenter(folder)
    with pytest.raises(EngineFileError, match="ONNX Runtime cannot load .*clip_dense.onnx.*corrupt"):
        EngineSegmenter(folder, verify=False)  # without the hash check, ONNX Runtime's own failure is wrapped


def test_manifest_missing_invalid_or_unknown_format(folder, tmp_path):
    with pytest.raises(EngineError, match="engine folder not found"):
        EngineSegmenter(tmp_path / "nowhere")
    data = _manifest(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(EngineError, match="not valid JSON"):
        EngineSegmenter(folder)
    (folder / "manifest.json").write_text(json.dumps({**data, "format": 99}))
    with pytest.raises(EngineError, match="engine format 99"):
        EngineSegmenter(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(EngineError, match="has no manifest.json"):
        EngineSegmenter(folder)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(method="resclip"), "exported for method 'sclip', but method 'resclip' was asked for"),
        (dict(preset="ade20k"), "exported for preset 'voc21', but preset 'ade20k'"),
        (dict(precision="fp16"), "exported for precision 'fp32'"),
        (dict(clip="ViT-B-16"), "exported for CLIP model 'clipsam-test-vit'"),
        (dict(base="naclip"), "base are baked into the exported graphs"),
        (dict(rcs=True), "rcs are baked into the exported graphs"),
    ],
)
def test_manifest_mismatch(engine_dir, kwargs, match):
    with pytest.raises(ManifestMismatchError, match=match):
        EngineSegmenter(engine_dir("sclip"), **kwargs)


def test_host_side_overrides_are_allowed(engine_dir):
    eng = EngineSegmenter(
        engine_dir("sclip"),
        method="sclip",
        preset="voc21",
        precision="fp32",
        short_side=128,
        slide_crop=0,
        prob_thd=0.3,
        pamr_iters=2,
    )
    assert (eng.config.short_side, eng.config.slide_crop, eng.config.prob_thd) == (128, 0, 0.3)


def test_refine_without_sam2_graphs(engine_dir):
    with pytest.raises(ManifestMismatchError, match="has no SAM2 graphs.*--sam2"):
        EngineSegmenter(engine_dir("sclip"), refine=True)


def test_requested_provider_that_does_not_load(engine_dir):
    import onnxruntime as ort

    probe = ort.InferenceSession(str(engine_dir("sclip") / "clip_text.onnx"), providers=["CUDAExecutionProvider"])
    if "CUDAExecutionProvider" in probe.get_providers():
        pytest.skip("CUDA loads on this machine")

    if "CUDAExecutionProvider" in ort.get_available_providers():  # onnxruntime-gpu without a usable GPU
        match = r"requested CUDAExecutionProvider but the session for clip_\w+.onnx uses only CPUExecutionProvider"
    else:  # the CPU-only onnxruntime package
        match = "CUDAExecutionProvider is not available in this ONNX Runtime build"
    with pytest.raises(ProviderError, match=match):
        EngineSegmenter(engine_dir("sclip"), providers=["cuda", "cpu"])


def test_provider_missing_from_the_build_and_fallback(engine_dir, chelsea_small):
    with pytest.raises(ProviderError, match="OpenVINOExecutionProvider is not available in this ONNX Runtime build"):
        EngineSegmenter(engine_dir("sclip"), providers="openvino,cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eng = EngineSegmenter(engine_dir("sclip"), providers=["openvino", "cpu"], allow_fallback=True, short_side=64)
    assert sum("OpenVINOExecutionProvider" in str(w.message) for w in caught) == 1  # warned once, not per graph
    assert eng.segment(chelsea_small, classes=["cat", "floor"]).info["providers"] == ["CPUExecutionProvider"]


def test_unknown_provider_name(engine_dir):
    with pytest.raises(ProviderError, match="unknown execution provider 'gpu'"):
        EngineSegmenter(engine_dir("sclip"), providers=["gpu"])
    assert issubclass(ProviderError, ClipSamError)


def test_tensorrt_options_come_from_the_manifest_profiles(engine_dir, tmp_path):
    from clipsam.engine.session import GraphSession, ProviderConfig

    entry = {**_manifest(engine_dir("sclip"))["graphs"]["clip_dense"], "folder": str(tmp_path)}
    opts = GraphSession._options(
        "TensorrtExecutionProvider", entry, ProviderConfig(trt_cache_dir=str(tmp_path / "c")), fp16=False
    )
    assert opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"] == str(tmp_path / "c")
    assert opts["trt_profile_min_shapes"].startswith("crops:1x3x16x16,pos_embed:2x128")
    assert "crops:8x3x224x224" in opts["trt_profile_max_shapes"] and opts["trt_fp16_enable"] is False  # sliding


# -- the manifest's own fields are validated against the graphs it lists and their hashes (issue 14) -------------
def _edit(folder, change):
    data = _manifest(folder)
    change(data)
    (folder / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d: d.update(method="foo"), r"says method 'foo', but its graphs were exported for method 'sclip'"),
        (lambda d: d.update(method="naclip"), r"says method 'naclip', but its graphs were exported for method 'sclip'"),
        (lambda d: d["dense_config"].update(base="naclip"), r"dense_config.base 'naclip'.*exported for .*'sclip'"),
        (lambda d: d["dense_config"].update(base="clearclip"), r"dense_config.base 'clearclip'"),
        (lambda d: d["clip"].update(patch=14), r"clip.patch 14, but its graphs were exported for clip.patch 16"),
        (lambda d: d.update(precision="fp16"), r"precision 'fp16'"),
    ],
    ids=["method-foo", "method-naclip", "base-naclip", "base-clearclip", "patch", "precision"],
)
def test_edited_manifest_fields_are_refused(folder, change, match):
    _edit(folder, change)
    with pytest.raises(ManifestMismatchError, match=match + r".*edited.*export the engines again"):
        EngineSegmenter(folder)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda d: d["clip"].update(patch="16"), r"clip.patch must be a positive integer, got '16'"),
        (lambda d: d["limits"].pop("max_batch"), r"limits.max_batch is missing"),
        (
            lambda d: d["graphs"]["clip_dense"].update(file="../clip_dense.onnx"),
            r"graphs.clip_dense.file .*plain file name",
        ),
        (lambda d: d["files"].pop("tokenizer"), r"files.tokenizer is missing"),
        (lambda d: d.update(graphs=[]), r"graphs must be a JSON object"),
        (lambda d: d["graph_settings"].update(sha256="0" * 64), r"graph_settings record does not match"),
        (lambda d: d.pop("graph_settings"), r"lacks graph_settings"),
    ],
    ids=["patch-type", "limits", "path", "files", "graphs-type", "seal", "no-seal"],
)
def test_malformed_manifest_fields_are_named(folder, change, match):
    _edit(folder, change)
    with pytest.raises(EngineError, match=match):
        EngineSegmenter(folder)


@pytest.mark.parametrize("name", ["clip_tokenizer.json", "host_constants.npz", "clip_bpe_vocab.txt.gz"])
def test_unverified_folder_with_a_corrupt_tokenizer_or_constants(folder, name):
    path = folder / name
    data = path.read_bytes()
    if name.endswith(".gz"):  # a valid gzip header, then damaged deflate data (zlib.error, not OSError)
        bad = data[:10] + bytes(b ^ 0x5A for b in data[10:200]) + data[200:]
    else:
        bad = b"{" + b"x" * (len(data) - 1)
    path.write_bytes(bad)  # same size: only the hash check would notice
    with pytest.raises(EngineFileError, match=name + ".*[Ee]xport the engines again"):
        EngineSegmenter(folder, verify=False)
