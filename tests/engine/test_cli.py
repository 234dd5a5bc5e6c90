"""``clipsam export`` and ``clipsam segment --engines`` through their argparse front ends (sdk/engine/cli.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clipsam.engine import cli as engine_cli

from ..conftest import TINY_VIT


def _parser():
    """clipsam's parser with the engine commands registered, as sdk/cli.py wires them."""
    from clipsam.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    if "export" not in sub.choices:
        engine_cli.register(sub)
    if not _wired(sub):
        engine_cli.add_segment_arguments(sub.choices["segment"])
    return parser


def _wired(sub=None) -> bool:
    """Whether sdk/cli.py already adds the engine options to ``clipsam segment``."""
    if sub is None:
        from clipsam.cli import build_parser

        sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return any("--engines" in a.option_strings for a in sub.choices["segment"]._actions)


def test_export_command(tmp_path, capsys):
    out = tmp_path / "engines"
    args = _parser().parse_args(["export", "--out", str(out), "--clip", TINY_VIT, "--random-weights", "--method",
                                 "clip", "--preset", "none", "--templates", "single", "--max-side", "512"])
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


def test_segment_with_engines(engine_dir, chelsea_small, tmp_path, capsys):
    photo = tmp_path / "cat.png"
    Image.fromarray(chelsea_small).save(photo)
    args = _parser().parse_args(["segment", str(photo), "--engines", str(engine_dir("resclip")), "--out",
                                 str(tmp_path / "out"), "--classes", "cat, grass, sky", "--refine", "sam2.1_hiera_t",
                                 "--no-progress", "--flip"])
    assert engine_cli.segment_with_engines(args) == 0
    assert "with ONNX Runtime (CPUExecutionProvider)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "cat.json").read_text())
    assert summary["classes"] == ["cat", "grass", "sky"] and summary["backend"] == "onnxruntime"
    assert summary["refine"]["sam2"] == "sam2.1_hiera_t" and summary["config"]["flip"] is True
    assert (tmp_path / "out" / "cat_instances.json").is_file()
    labels = np.array(Image.open(tmp_path / "out" / "cat_labels.png"))
    assert labels.shape == chelsea_small.shape[:2]


def test_batch_with_engines_and_refinement(engine_dir, chelsea_small, tmp_path, capsys):
    from clipsam.cli import main

    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(chelsea_small).save(tmp_path / "in" / "sub" / "cat.png")
    Image.fromarray(chelsea_small[:40]).save(tmp_path / "in" / "top.png")
    argv = ["batch", str(tmp_path / "in"), "--engines", str(engine_dir("resclip")), "--out", str(tmp_path / "out"),
            "--classes", "cat, grass, sky", "--refine", "sam2.1_hiera_t", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "out" / "sub" / "cat.json").read_text())
    assert summary["backend"] == "onnxruntime" and summary["refine"]["sam2"] == "sam2.1_hiera_t"
    assert (tmp_path / "out" / "sub" / "cat_instances.json").is_file() and (tmp_path / "out" / "top_labels.png").is_file()
    assert "2 segmented" in capsys.readouterr().out
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "0 segmented" in again and "2 already done" in again


def test_segment_with_engines_checks_the_request(engine_dir, tmp_path):
    photo = tmp_path / "cat.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photo)
    base = ["segment", str(photo), "--engines", str(engine_dir("resclip")), "--out", str(tmp_path / "o")]
    from clipsam.engine.errors import ManifestMismatchError, ProviderError

    with pytest.raises(ManifestMismatchError, match="method 'naclip'"):
        engine_cli.segment_with_engines(_parser().parse_args(base + ["--method", "naclip"]))
    with pytest.raises(ManifestMismatchError, match="preset 'ade20k'"):
        engine_cli.segment_with_engines(_parser().parse_args(base + ["--preset", "ade20k"]))
    with pytest.raises(ProviderError, match="unknown execution provider"):
        engine_cli.segment_with_engines(_parser().parse_args(base + ["--providers", "quantum"]))
    with pytest.raises(ManifestMismatchError, match="holds SAM2 model 'sam2.1_hiera_t', but 'sam2.1_hiera_l'"):
        engine_cli.segment_with_engines(_parser().parse_args(base + ["--refine", "sam2.1_hiera_l"]))


def test_main_entry_point(engine_dir, chelsea_small, tmp_path):
    """``clipsam segment --engines`` and ``clipsam export --help`` through clipsam.cli.main, once sdk/cli.py wires them."""
    if not _wired():
        pytest.skip("sdk/cli.py does not wire the engine commands yet (register / add_segment_arguments)")
    from clipsam.cli import main

    photo = tmp_path / "cat.png"
    Image.fromarray(chelsea_small).save(photo)
    out = tmp_path / "out"
    assert main(["segment", str(photo), "--engines", str(engine_dir("resclip")), "--out", str(out), "--classes",
                 "cat, grass", "--no-progress"]) == 0
    assert json.loads((out / "cat.json").read_text())["backend"] == "onnxruntime"
    with pytest.raises(SystemExit):
        main(["export", "--help"])
