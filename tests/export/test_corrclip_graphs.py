"""CorrCLIP's exported graphs (``dino_features``, ``clip_dense_corrclip``) and their engine folder: IO, manifest,
sealed baked fields, TensorRT profiles, parity cases where merging fires, and the export's refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipsam.config import dense_config
from clipsam.engine.io_names import dense_graphs
from clipsam.errors import ConfigError, ManifestMismatchError

from ..dense.test_corrclip import _flush_denormals, small_dino  # noqa: F401  (module fixtures)
from ..engines import TEMPLATES

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def dino(request):
    return request.getfixturevalue("small_dino")


@pytest.fixture(scope="module")
def folder(tiny_clip, dino, tmp_path_factory):
    from clipsam.export import export_engines

    out = tmp_path_factory.mktemp("corrclip_graphs")
    export_engines(
        out,
        clip=tiny_clip,
        method="corrclip",
        preset="voc21",
        dino=dino,
        corr_mask_source="none",
        corr_branch_weights=(1.0, 0.25),
        templates=TEMPLATES,
        log=None,
    )
    return out


def test_graph_set_manifest_and_profiles(folder):
    dino_io, clip_io = dense_graphs("corrclip", False, False)
    assert (dino_io.inputs, dino_io.outputs) == (("crops", "dino_pos_embed"), ("dino_features",))
    assert clip_io.inputs == ("crops", "pos_embed", "scope_attention", "mct_allow", "mct_index", "text_embeddings")
    m = json.loads((folder / "manifest.json").read_text())
    assert set(m["graphs"]) == {"clip_text", "dino_features", "clip_dense_corrclip"}
    assert m["dino"]["patch"] == 8 and m["dino"]["width"] == 64 and m["dino"]["native_grid"] == 28
    sealed = m["graph_settings"]["fields"]
    assert sealed["dino"] == m["dino"]
    assert sealed["dense_config"]["corr_branch_weights"] == [1.0, 0.25]
    assert "corr_spatial_blocks" in sealed["dense_config"] and "corr_merge_eps" not in sealed["dense_config"]
    rows = [r for r in m["validation"] if r["graph"] in ("dino_features", "clip_dense_corrclip")]
    assert len(rows) == 6 and all(r["ok"] and r["max_abs_err"] < 1e-5 for r in rows)
    prof = m["graphs"]["clip_dense_corrclip"]["profile"]
    assert prof["max"]["crops"] == [8, 3, 336, 336] and prof["max"]["scope_attention"] == [8, 1764, 1764]
    assert prof["max"]["mct_allow"] == [8, 441, 442] and prof["min"]["crops"] == [1, 3, 56, 56]
    assert m["graphs"]["dino_features"]["profile"]["max"]["dino_pos_embed"] == [1765, 64]
    with np.load(folder / "host_constants.npz") as consts:
        assert consts["dino_pos_embed"].shape == (785, 64)


def test_parity_cases_merge_regions(tiny_clip, dino, monkeypatch):
    """The export's own validation inputs make the host merge some regions (and not all)."""
    import clipsam.ops.corrclip as oc
    from clipsam.dense.corrclip import CorrClipEncoder
    from clipsam.export.corrclip_graphs import corrclip_cases

    seen = []
    orig = oc.merge_regions

    def spy(ids, *a):
        out = orig(ids, *a)
        seen.append((len(np.unique(ids)), len(np.unique(out))))
        return out

    monkeypatch.setattr(oc, "merge_regions", spy)
    enc = CorrClipEncoder(tiny_clip.model.visual, dino, dense_config("corrclip", "voc21", corr_mask_source="none"))
    (_, dcases), (_, ccases) = corrclip_cases(enc, [(2, 112, 112), (1, 112, 168)])
    assert any(after < before for before, after in seen) and all(after > 1 for _, after in seen)
    assert ccases[0].inputs["mct_allow"].shape[:2] == (2, max(n for _, n in seen[:2]))


def test_edited_baked_field_and_host_fields(folder):
    from clipsam.engine import EngineSegmenter

    seg = EngineSegmenter(folder, corr_merge_eps=0.5, corr_unsegmented="zero")
    assert seg.config.corrclip.corr_branch_weights == (1.0, 0.25)
    path = folder / "manifest.json"
    saved = path.read_text()
    try:
        m = json.loads(saved)
        m["dense_config"]["corr_branch_weights"] = [1.0, 0.5]
        path.write_text(json.dumps(m))
        with pytest.raises(ManifestMismatchError, match="corr_branch_weights"):
            EngineSegmenter(folder)
        m = json.loads(saved)
        m["dino"]["width"] = 768
        path.write_text(json.dumps(m))
        with pytest.raises(ManifestMismatchError, match="dino"):
            EngineSegmenter(folder)
    finally:
        path.write_text(saved)


def test_export_refusals(tiny_clip, tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    from clipsam.export import export_engines

    with pytest.raises(ConfigError, match="SAM2 graphs"):
        export_engines(tmp_path / "a", clip="not loaded", method="corrclip", preset="voc21", log=None)
    patch16 = VisionTransformer(img_size=224, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=0)
    with pytest.raises(ConfigError, match="8-pixel patches"):
        export_engines(
            tmp_path / "b", clip=tiny_clip, method="corrclip", dino=patch16, corr_mask_source="given", log=None
        )
    assert not (tmp_path / "b" / "manifest.json").exists()
