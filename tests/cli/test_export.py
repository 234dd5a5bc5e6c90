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


@pytest.mark.parametrize("method,missing", [("rfclip", "kk attention"), ("corrclip", "DINO ViT-B/8 graph")])
def test_export_refuses_rfclip_and_corrclip_before_loading(tmp_path, capsys, monkeypatch, method, missing):
    """No engine folder computing another method: a clear error naming the missing part, before any model loads."""
    import clipsam.models
    from clipsam.cli import main

    monkeypatch.setattr(clipsam.models, "load_clip", lambda *a, **k: pytest.fail("a model was loaded"))
    out = tmp_path / "engines"
    assert main(["export", "--out", str(out), "--random-weights", "--method", method, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"cannot export method '{method}'" in err and missing in err and "PyTorch backend" in err
    assert not out.exists()
