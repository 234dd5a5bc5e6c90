"""``clipsam export`` through its argparse front end."""

from __future__ import annotations

import json

import pytest

from clipsam.cli import build_parser

from ..conftest import TINY_VIT


def test_export_command(tmp_path, capsys):
    out = tmp_path / "engines"
    args = build_parser().parse_args(
        [
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
            "512",
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr()
    assert "RANDOM weights" in printed.err and "max|ort-torch|" in printed.out and "clip_dense" in printed.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "clip" and manifest["preset"] is None and manifest["limits"]["max_grid"] == 32
    assert set(manifest["graphs"]) == {"clip_text", "clip_dense"}
    assert all(r["ok"] for r in manifest["validation"])
    assert (out / "trtexec.sh").read_text().count("trtexec --onnx=") == 2
    with pytest.raises(Exception, match="not empty"):
        args.func(args)


@pytest.mark.parametrize("method,missing", [("corrclip", "DINO ViT-B/8 graph")])
def test_export_refuses_corrclip_before_loading(tmp_path, capsys, monkeypatch, method, missing):
    """No engine folder computing another method: a clear error naming the missing part, before any model loads."""
    import clipsam.models
    from clipsam.cli import main

    monkeypatch.setattr(clipsam.models, "load_clip", lambda *a, **k: pytest.fail("a model was loaded"))
    out = tmp_path / "engines"
    assert main(["export", "--out", str(out), "--random-weights", "--method", method, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"cannot export method '{method}'" in err and missing in err and "PyTorch backend" in err
    assert not out.exists()


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
