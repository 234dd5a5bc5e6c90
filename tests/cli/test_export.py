"""``clipsam export`` through its argparse front end."""

from __future__ import annotations

import json

import pytest

from clipsam.cli import build_parser

from ..conftest import TINY_VIT


def test_export_command(tmp_path, capsys):
    out = tmp_path / "engines"
    args = build_parser().parse_args(args_argv(out) + ["512", "--max-queries", "64"])
    assert args.func(args) == 0
    printed = capsys.readouterr()
    assert "RANDOM weights" in printed.err and "max|ort-torch|" in printed.out and "clip_dense" in printed.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "clip" and manifest["preset"] is None and manifest["limits"]["max_grid"] == 32
    assert manifest["limits"]["max_queries"] == 64
    assert set(manifest["graphs"]) == {"clip_text", "clip_dense"}
    assert all(r["ok"] for r in manifest["validation"])
    assert (out / "trtexec.sh").read_text().count("trtexec --onnx=") == 2
    with pytest.raises(Exception, match="not empty"):
        args.func(args)
    # --overwrite with an opset torch cannot export: refused before any model loads, the folder untouched (an
    # opset of 99 used to fail after the export had begun, with the old manifest already deleted)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    argv = args_argv(out)  # ends with --max-side
    bad = build_parser().parse_args(argv + ["512", "--overwrite", "--opset", "99"])
    with pytest.raises(Exception, match=r"opset 99 is newer than this torch and onnx can export \(at most \d+\)"):
        bad.func(bad)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    again = build_parser().parse_args(argv + ["512", "--overwrite"])
    assert again.func(again) == 0
    assert json.loads((out / "manifest.json").read_text())["graphs"].keys() == manifest["graphs"].keys()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def args_argv(out):
    return [
        "export",
        "--out",
        str(out),
        "--clip",
        TINY_VIT,
        "--random-weights",
        "--method",
        "clip",
        "--preset",
        "none",
        "--templates",
        "single",
        "--max-side",
    ]


def test_export_corrclip_without_a_mask_source_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    """CorrCLIP's default automatic masks need the SAM2 graphs: without --sam2 (and without --mask-source given or
    none) a clear error names the choices, before any model loads."""
    import clipsam.models
    from clipsam.cli import main

    monkeypatch.setattr(clipsam.models, "load_clip", lambda *a, **k: pytest.fail("a model was loaded"))
    out = tmp_path / "engines"
    assert main(["export", "--out", str(out), "--random-weights", "--method", "corrclip", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--sam2 MODEL" in err and "--mask-source given" in err and "corr_mask_source='none'" in err
    assert not out.exists()
    assert main(["export", "--out", str(out), "--random-weights", "--mask-source", "none", "--quiet"]) == 2
    assert "--method corrclip only" in capsys.readouterr().err


def test_export_and_segment_corrclip_with_a_masks_folder(tmp_path, chelsea_small, capsys, narrow_dino):
    """``clipsam export --method corrclip --mask-source given`` (the tiny CLIP, a narrow timm DINO with patch 8
    standing in for ViT-B/8), then ``clipsam segment --engines DIR --masks DIR``: the same labels as the PyTorch
    backend's ``clipsam segment --method corrclip --masks DIR``; each given region voted to one label."""
    import numpy as np
    from PIL import Image

    from clipsam.cli import main

    photo, engines, masks = tmp_path / "cat.png", tmp_path / "engines", tmp_path / "masks"
    Image.fromarray(chelsea_small).resize((125, 94)).save(photo)
    masks.mkdir()
    ids = np.zeros((94, 125), np.int32)
    ids[10:60, 20:90], ids[50:90, 60:120] = 1, 2
    np.save(masks / "cat.npy", ids)
    model = ["--clip", TINY_VIT, "--random-weights", "--templates", "single"]
    export = ["export", "--out", str(engines), "--method", "corrclip", "--mask-source", "given"]
    assert main(export + model) == 0
    printed = capsys.readouterr().out
    assert "dino_features" in printed and "clip_dense_corrclip" in printed and "max|ort-torch|" in printed
    manifest = json.loads((engines / "manifest.json").read_text())
    assert set(manifest["graphs"]) == {"clip_text", "dino_features", "clip_dense_corrclip"}
    assert manifest["dino"]["patch"] == 8 and all(r["ok"] for r in manifest["validation"])
    common = ["segment", str(photo), "--classes", "cat, grass, sky", "--no-progress", "--masks", str(masks), "--out"]
    assert main([*common, str(tmp_path / "ort"), "--engines", str(engines)]) == 0
    assert main([*common, str(tmp_path / "pt"), "--method", "corrclip", "--preset", "voc21", *model]) == 0
    ort, pt = (json.loads((tmp_path / d / "cat.json").read_text()) for d in ("ort", "pt"))
    assert ort["backend"] == "onnxruntime" and ort["config"]["corr_mask_source"] == "given"
    a, b = (np.array(Image.open(tmp_path / d / "cat_labels.png")) for d in ("ort", "pt"))
    assert a.shape == (94, 125)
    np.testing.assert_array_equal(a, b)
    for v in (1, 2):
        assert len(np.unique(a[ids == v])) == 1
    capsys.readouterr()
    assert main([*common, str(tmp_path / "x"), "--engines", str(engines), "--dino-weights", "d.pth"]) == 2
    assert "in the engine folder" in capsys.readouterr().err


@pytest.mark.slow
def test_export_and_segment_rfclip_from_the_command_line(tmp_path, chelsea_small, capsys):
    """``clipsam export --method rfclip --preset voc21`` on ViT-B/16 (random weights; RF-CLIP's sink channels are
    ViT-B/16's), then ``clipsam segment --engines``: the same labels as the PyTorch backend's ``clipsam segment``."""
    import numpy as np
    from PIL import Image

    from clipsam.cli import main

    photo, engines = tmp_path / "cat.png", tmp_path / "engines"
    Image.fromarray(chelsea_small).save(photo)
    model = ["--clip", "ViT-B-16", "--random-weights", "--templates", "single"]
    export = ["export", "--out", str(engines), "--method", "rfclip", "--preset", "voc21", "--max-side", "512"]
    assert main(export + model) == 0
    printed = capsys.readouterr().out
    assert "clip_dense_rfclip" in printed and "max|ort-torch|" in printed
    manifest = json.loads((engines / "manifest.json").read_text())
    assert manifest["method"] == "rfclip" and set(manifest["graphs"]) == {"clip_text", "clip_dense_rfclip"}
    assert all(r["ok"] for r in manifest["validation"])
    common = ["segment", str(photo), "--classes", "cat, grass, sky, sofa, wall", "--no-progress", "--out"]
    assert main([*common, str(tmp_path / "ort"), "--engines", str(engines)]) == 0
    assert main([*common, str(tmp_path / "pt"), "--method", "rfclip", "--preset", "voc21", *model]) == 0
    ort, pt = (json.loads((tmp_path / d / "cat.json").read_text()) for d in ("ort", "pt"))
    assert ort["backend"] == "onnxruntime" and "backend" not in pt  # the PyTorch summary names no backend
    a, b = (np.array(Image.open(tmp_path / d / "cat_labels.png")) for d in ("ort", "pt"))
    assert a.shape == chelsea_small.shape[:2]
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) > 1  # measured: two classes (sky, sofa) on this photo
