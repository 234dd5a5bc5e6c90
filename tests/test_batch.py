"""clipsam batch: planning, in-process runs, bad images, resuming after an interruption (a killed process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .cli.runner import run_cli
from .conftest import TINY_VIT

MODEL = dict(
    clip=str(TINY_VIT),
    clip_weights=None,
    method="sclip",
    preset="voc21",
    short_side=48,
    templates=("a photo of a {}.",),
)


def make_images(folder: Path, n: int, bad: bool = True) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40 + 4 * i, 56, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    if bad:
        (folder / "a" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    return paths


def labels_of(out: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(out / f"{name}_labels.png"))


def test_in_process_run_reports_bad_image_and_matches_segment(tmp_path, make_segmenter):
    from clipsam.batch import run_batch
    from clipsam.segmenter import Segmenter

    paths = make_images(tmp_path / "in", 4)
    report = run_batch(
        [str(tmp_path / "in")], tmp_path / "out", model=MODEL, classes="cat, grass, sky", batch_size=3, progress=False
    )
    assert (report["total"], report["done"], report["failed"], report["skipped"]) == (5, 4, 1, 0)
    assert report["failures"][0]["path"].endswith("broken.jpg") and "broken.jpg" in report["failures"][0]["error"]
    assert json.loads((tmp_path / "out" / "batch_report.json").read_text())["failed"] == 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = Segmenter.from_pretrained(**MODEL)
    for p in paths:
        name = f"{p.parent.name}/{p.stem}"
        expected = seg.segment(str(p), classes="cat, grass, sky").labels
        assert np.array_equal(labels_of(tmp_path / "out", name), expected)
        summary = json.loads((tmp_path / "out" / f"{name}.json").read_text())
        assert summary["image"] == str(p)
    assert not list((tmp_path / "out").rglob(".partial-*"))
    again = run_batch([str(tmp_path / "in")], tmp_path / "out", model=MODEL, classes="cat, grass, sky", progress=False)
    assert (again["skipped"], again["done"], again["failed"]) == (4, 0, 1)  # only the bad image is retried


def test_resume_goes_by_the_image_a_summary_records_not_by_the_name(tmp_path):
    """a.png alone is output 'a'; beside a new a.jpg the names move (a.jpg 'a', a.png 'a_png'). The resumed run
    skipped a.jpg as done (its name had a summary, of a.png) and segmented a.png again."""
    from clipsam.batch import run_batch

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(folder / "a.png")
    run = dict(model=MODEL, classes="cat, grass, sky", progress=False)
    assert run_batch([str(folder)], out, **run)["done"] == 1
    Image.fromarray(rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)).save(folder / "a.jpg")
    report = run_batch([str(folder)], out, **run)
    assert report["total"] == 2 and report["done"] + report["skipped"] == 2 and report["failed"] == 0
    recorded = {json.loads(p.read_text())["image"]: p.stem for p in out.glob("a*.json")}
    assert set(recorded) == {str(folder / "a.png"), str(folder / "a.jpg")}  # each image has its own outputs
    again = run_batch([str(folder)], out, **run)
    assert (again["done"], again["skipped"]) == (0, 2)  # and a third run finds both done
    from clipsam.segmenter import Segmenter

    seg = Segmenter.from_pretrained(**MODEL)
    for image, name in recorded.items():
        assert np.array_equal(labels_of(out, name), seg.segment(image, classes="cat, grass, sky").labels)


def _cli(*args):
    """``clipsam batch ARGS...`` on the test model, as a command line for a new process."""
    return [sys.executable, "-m", "clipsam.cli", *_batch(*args)]


def _batch(*args):
    """The arguments of ``clipsam batch ARGS...`` on the test model."""
    return [
        "batch",
        *args,
        "--clip",
        str(TINY_VIT),
        "--random-weights",
        "--method",
        "sclip",
        "--preset",
        "voc21",
        "--templates",
        "single",
        "--no-progress",
    ]


@pytest.mark.slow
def test_killed_run_resumes_without_loss_or_duplicates(tmp_path):
    make_images(tmp_path / "in", 10, bad=False)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    run_cli(*_batch(str(tmp_path / "in"), "--out", str(tmp_path / "clean")))  # the reference, in this process
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _cli(str(tmp_path / "in"), "--out", str(out), "--batch-size", "1"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.rglob("*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len([p for p in out.rglob("*.json") if p.name != "batch_report.json"])
    assert 3 <= first < 10, "the run was not interrupted half-way"
    res = run_cli(*_batch(str(tmp_path / "in"), "--out", str(out)))  # only the killed run needs a process of its own
    assert f"{10 - first} segmented" in res.stdout and f"{first} already done" in res.stdout
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    expected = sorted(
        p.relative_to(tmp_path / "clean").as_posix() for p in (tmp_path / "clean").rglob("*") if p.is_file()
    )
    assert files == expected  # nothing lost, nothing extra (no partial files left behind)
    for f in files:
        if f.endswith("_labels.png"):
            assert np.array_equal(
                labels_of(out, f[: -len("_labels.png")]), labels_of(tmp_path / "clean", f[: -len("_labels.png")])
            )


def test_batch_with_engines_and_refinement(engine_dir, chelsea_small, tmp_path, capsys):
    from clipsam.cli import main

    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(chelsea_small).save(tmp_path / "in" / "sub" / "cat.png")
    Image.fromarray(chelsea_small[:40]).save(tmp_path / "in" / "top.png")
    argv = [
        "batch",
        str(tmp_path / "in"),
        "--engines",
        str(engine_dir("resclip")),
        "--out",
        str(tmp_path / "out"),
        "--classes",
        "cat, grass, sky",
        "--refine",
        "sam2.1_hiera_t",
        "--no-progress",
    ]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "out" / "sub" / "cat.json").read_text())
    assert summary["backend"] == "onnxruntime" and summary["refine"]["sam2"] == "sam2.1_hiera_t"
    assert (tmp_path / "out" / "sub" / "cat_instances.json").is_file() and (
        tmp_path / "out" / "top_labels.png"
    ).is_file()
    assert "2 segmented" in capsys.readouterr().out
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "0 segmented" in again and "2 already done" in again


def test_in_process_decode_ahead_gives_the_same_outputs(tmp_path):
    """``decode_workers=2``: the next chunk is decoded while one is segmented; same labels, the broken image still
    fails alone; the option is refused on Ray and for bad values before anything loads."""
    from clipsam.batch import run_batch
    from clipsam.errors import ConfigError

    make_images(tmp_path / "in", 5)
    kw = dict(model=MODEL, classes="cat, grass, sky", batch_size=2, progress=False)
    ref = run_batch([str(tmp_path / "in")], tmp_path / "ref", **kw)
    got = run_batch([str(tmp_path / "in")], tmp_path / "out", decode_workers=2, **kw)
    assert (got["done"], got["failed"]) == (ref["done"], ref["failed"]) == (5, 1)
    assert "broken.jpg" in got["failures"][0]["error"]
    for p in (tmp_path / "ref").rglob("*_labels.png"):
        name = p.relative_to(tmp_path / "ref").as_posix()[: -len("_labels.png")]
        assert np.array_equal(labels_of(tmp_path / "out", name), labels_of(tmp_path / "ref", name))
    with pytest.raises(ConfigError, match="in-process runs"):
        run_batch([str(tmp_path / "in")], tmp_path / "x", decode_workers=1, ray=True, **kw)
    with pytest.raises(ConfigError, match="decode_workers must be"):
        run_batch([str(tmp_path / "in")], tmp_path / "x", decode_workers=-2, **kw)


def test_rerun_with_the_output_folder_inside_the_input_folder_segments_nothing_new(tmp_path):
    from clipsam.batch import run_batch

    make_images(tmp_path / "photos", 2, bad=False)
    kw = dict(model=MODEL, classes="cat, grass", progress=False)
    first = run_batch([str(tmp_path / "photos")], tmp_path / "photos" / "labels", **kw)
    assert (first["total"], first["done"]) == (2, 2)
    again = run_batch([str(tmp_path / "photos")], tmp_path / "photos" / "labels", **kw)
    assert (again["total"], again["done"], again["skipped"]) == (2, 0, 2)  # its own outputs are not new photos
    assert not (tmp_path / "photos" / "labels" / "labels").exists()
