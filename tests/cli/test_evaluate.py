"""``clipsam eval`` end to end (``clipsam.cli.main`` in this process; ``python -m clipsam.cli`` in a subprocess once)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipsam.cli import build_parser
from clipsam.cli.evaluate import cmd_eval

from ..conftest import TINY_VIT
from ..eval.test_datasets import _write_image, _write_label
from .runner import run_cli

IDS = ["2008_000001", "2008_000002", "2008_000003"]


def run(*args, check=True):
    """``python -m clipsam.cli ARGS...`` in a new process."""
    proc = subprocess.run([sys.executable, "-m", "clipsam.cli", *args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


@pytest.fixture
def voc(tmp_path) -> Path:
    base = tmp_path / "VOC2012"
    rng = np.random.default_rng(1)
    for k, i in enumerate(IDS):
        _write_image(base / "JPEGImages" / f"{i}.jpg", 20 + k, 24)
        _write_label(base / "SegmentationClass" / f"{i}.png", rng.integers(0, 21, (20 + k, 24)), palette=True)
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(IDS) + "\n")
    return tmp_path


def test_help_lists_the_options():
    ev = run("eval", "--help").stdout
    for opt in (
        "--dataset",
        "--root",
        "--split",
        "--method",
        "--preset",
        "--clip",
        "--weights",
        "--random-weights",
        "--device",
        "--precision",
        "--limit",
        "--skip-bad",
        "--no-resume",
        "--out",
        "--engines",
        "voc21",
        "ade20k",
        "--context-prompts",
        "--descriptions",
        "--enrichment",
        "--disambiguate",
        "--calibration",
    ):
        assert opt in ev, opt
    be = run_cli("bench", "--help").stdout
    for opt in ("--suite", "--smoke", "--device"):
        assert opt in be, opt


def test_register_on_the_main_parser():
    args = build_parser().parse_args(["eval", "--dataset", "voc21", "--root", "x", "--random-weights"])
    assert args.func is cmd_eval and args.preset is None and args.out == "results.json" and args.random_weights


def test_eval_end_to_end_with_a_missing_label(voc, tmp_path):
    (voc / "VOC2012" / "SegmentationClass" / f"{IDS[1]}.png").unlink()
    out = tmp_path / "res" / "voc.json"
    common = [
        "eval",
        "--dataset",
        "voc21",
        "--root",
        str(voc),
        "--out",
        str(out),
        "--random-weights",
        "--clip",
        TINY_VIT,
        "--method",
        "naclip",
        "--templates",
        "single",
    ]
    p = run_cli(*common, check=False)
    assert p.returncode == 2 and f"{IDS[1]}.png" in p.stderr and "Traceback" not in p.stderr
    p = run_cli(*common, "--skip-bad", "--descriptions", "voc20", "--calibration", "knn")  # an ablation row
    assert "RANDOM" in p.stderr and "mIoU" in p.stdout
    data = json.loads(out.read_text())
    assert data["config"]["prompts"]["descriptions"] == "voc20" and data["config"]["config"]["calibration"] == "knn"
    assert data["images"] == 2 and data["skipped"][0]["path"].endswith(f"{IDS[1]}.png")
    assert data["config"]["config"]["method"] == "naclip" and data["config"]["config"]["preset"] == "voc21"
    assert data["config"]["clip"] == "clipsam-test-vit" and 0 <= data["mIoU"] <= 100
    md = out.with_suffix(".md").read_text()
    assert "NACLIP README" in md and "64.07" in md and f"{IDS[1]}.png" in md


def test_corrclip_is_evaluated_with_its_mask_flags(voc, tmp_path, capsys, narrow_dino):
    """CorrCLIP's vocabulary (voc21_corrclip: 'people' for person) is the dataset's; the command takes its mask
    flags (it named --automask / --mask-source none, which eval did not have). A narrow DINO from timm stands in for
    ViT-B/8 to keep the test fast."""
    out = tmp_path / "corr.json"
    argv = ["eval", "--dataset", "voc21", "--root", str(voc), "--out", str(out), "--random-weights", "--clip", TINY_VIT]
    args = build_parser().parse_args(argv + ["--method", "corrclip", "--mask-source", "none", "--limit", "1"])
    assert args.func(args) == 0 and narrow_dino == [None]  # --random-weights: random DINO too
    data = json.loads(out.read_text())
    assert data["images"] == 1 and data["config"]["config"]["method"] == "corrclip"
    assert data["per_class"][15]["name"] == "person"  # reported under the dataset's own class names
    with pytest.raises(SystemExit):  # per-image masks are segment's and batch's: eval reads the images by path
        build_parser().parse_args(argv + ["--method", "corrclip", "--masks", str(tmp_path)])


def test_engines_folder_without_manifest_is_an_error(voc, tmp_path):
    p = run_cli(
        "eval",
        "--dataset",
        "voc21",
        "--root",
        str(voc),
        "--engines",
        str(tmp_path),
        "--out",
        str(tmp_path / "r.json"),
        check=False,
    )
    assert p.returncode == 2 and "has no manifest.json" in p.stderr and "Traceback" not in p.stderr


def test_out_named_like_the_markdown_report_is_refused_before_the_model_loads(voc, tmp_path):
    p = run_cli("eval", "--dataset", "voc21", "--root", str(voc), "--out", str(tmp_path / "r.md"), check=False)
    assert p.returncode == 2 and "--out" in p.stderr and "r.json" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r.md").exists()
