"""RF-CLIP's exported graph (``clip_dense_rfclip``) and its engine folder: IO, baked fields, data-dependent denoising."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipsam.config import dense_config
from clipsam.engine.io_names import dense_graphs

from ..dense.test_rfclip import _flush_denormals  # noqa: F401  (module fixture: denormals of random weights)
from ..engines import TEMPLATES

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

RF_GRAPH = ("rf_sink_channels", "rf_sink_sigma", "rf_denoise_alpha", "rf_denoise_exact_identity")


@pytest.fixture(scope="module")
def folder(rfclip_planted, tmp_path_factory):
    from clipsam.export import export_engines

    out = tmp_path_factory.mktemp("rfclip_dense")
    export_engines(
        out,
        clip=rfclip_planted.clip,
        method="rfclip",
        preset="context60",
        templates=TEMPLATES,
        max_side=320,
        log=None,
        **rfclip_planted.overrides,
    )
    return out


def test_graph_set_and_manifest(folder):
    (io,) = dense_graphs("rfclip", False, False)
    assert (io.name, io.inputs, io.outputs) == (
        "clip_dense_rfclip",
        ("crops", "pos_embed"),
        ("patch_features", "cls_embedding"),
    )
    m = json.loads((folder / "manifest.json").read_text())
    assert (m["method"], m["preset"]) == ("rfclip", "context60")
    assert set(m["graphs"]) == {"clip_text", "clip_dense_rfclip"}
    assert m["graphs"]["clip_dense_rfclip"]["outputs"] == ["patch_features", "cls_embedding"]
    rows = [r for r in m["validation"] if r["graph"] == "clip_dense_rfclip"]
    assert {r["output"] for r in rows} == {"patch_features", "cls_embedding"} and len(rows) == 6
    assert all(r["ok"] and r["max_abs_err"] < 1e-4 for r in rows)
    sealed = m["graph_settings"]["fields"]["dense_config"]
    assert sealed["rf_sink_channels"] == [4, 50, 100] and sealed["rf_sink_sigma"] == 1.5
    assert all(k in sealed for k in RF_GRAPH + ("rf_enhance_beta", "rf_renormalise_attention"))
    assert "rf_text_alpha" not in sealed and "rf_cluster_threshold" not in sealed  # host-side
    profile = m["graphs"]["clip_dense_rfclip"]["profile"]
    assert profile["max"]["crops"] == [8, 3, 320, 320]  # sliding windows, but whole images for the global CLS
    assert profile["opt"]["crops"][2:] == [224, 224]


def test_denoising_flags_are_computed_in_the_graph(folder):
    g = onnx.load(str(folder / "clip_dense_rfclip.onnx")).graph
    constants = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    greater = [n for n in g.node if n.op_type == "Greater"]
    assert len(greater) == 12  # one flag test per denoising call (12 blocks)
    assert all(n.input[0] not in constants for n in greater)
    flags = {n.output[0] for n in greater}
    flags |= {n.output[0] for n in g.node if n.op_type == "Unsqueeze" and n.input[0] in flags}  # flagged[..., None]
    assert len([n for n in g.node if n.op_type == "Where" and n.input[0] in flags]) == 12  # f' = where(flag, mean, f)


def test_graph_equals_the_encoder_where_the_denoising_fires(folder, rfclip_planted, monkeypatch):
    """The planted image (red left part) through ONNX Runtime and through ``RFClipEncoder.encode``."""
    from clipsam.dense.rfclip import RFClipEncoder
    from clipsam.preprocess import preprocess

    cfg = dense_config("rfclip", "context60", **rfclip_planted.overrides)
    enc = RFClipEncoder(rfclip_planted.clip.model.visual, cfg)
    crops = np.stack(
        [preprocess(rfclip_planted.image(seed=s), 64, 2048, min_side=16)[:, :48, :80] for s in (0, 1)]
    ).astype(np.float32)
    pos = enc.base.pos_embed(3, 5, torch.zeros(1)).numpy()
    sess = ort.InferenceSession(str(folder / "clip_dense_rfclip.onnx"), providers=["CPUExecutionProvider"])
    p_ort, c_ort = sess.run(None, {"crops": crops, "pos_embed": pos})
    with torch.inference_mode():
        p, c, grid = enc.encode(torch.from_numpy(crops))
        quiet = RFClipEncoder(rfclip_planted.clip.model.visual, cfg.replace(rf_sink_sigma=1e9)).encode(
            torch.from_numpy(crops)
        )[0]
    assert grid == (3, 5) and p_ort.shape == (2, 15, 64) and c_ort.shape == (2, 64)
    assert (p - quiet).abs().max() > 1e-2  # the denoising changes these features
    np.testing.assert_allclose(p_ort, p.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(c_ort, c.numpy(), atol=1e-4, rtol=0)


def test_tiny_model_without_matching_sink_channels_is_refused(tiny_clip, tmp_path):
    from clipsam.errors import ConfigError
    from clipsam.export import export_engines

    with pytest.raises(ConfigError, match="rf_sink_channels"):
        export_engines(tmp_path / "e", clip=tiny_clip, method="rfclip", preset="voc21", templates=TEMPLATES, log=None)
    assert not (tmp_path / "e" / "manifest.json").exists()
