"""The command line's error policy (issue 14): one message naming the problem and the fix, no traceback, a non-zero
exit, checked before any model loads; Ctrl-C says what was finished and how to resume (exit 130)."""

from __future__ import annotations

import pytest

from clipsam.errors import ClipSamError


def test_image_arguments_that_are_urls_or_missing(tmp_path):
    from clipsam.inputs import expand_inputs

    with pytest.raises(ClipSamError, match="'https://example.com/a.jpg' is a URL; clipsam does not fetch URLs"):
        expand_inputs(["https://example.com/a.jpg"])
    with pytest.raises(ClipSamError, match="is a URL"):
        expand_inputs(["s3://bucket/photos/a.jpg"])
    with pytest.raises(ClipSamError, match=r"image file not found: .*nope.jpg"):
        expand_inputs([str(tmp_path / "nope.jpg")])


# -- output locations are checked before any model loads ------------------------------------------------------
def _problem(tmp_path, monkeypatch, kind):
    """An --out of the given kind; read-only and permission problems are simulated (the tests may run as root)."""
    import errno

    import clipsam.paths

    blocker = tmp_path / "taken.txt"
    blocker.write_text("a file")
    if kind == "file":
        return blocker, "is a file, not a folder"
    if kind == "under-a-file":
        return blocker / "sub", "taken.txt is a file, not a folder"
    code, text = (errno.EROFS, "Read-only file system") if kind == "read-only" else (errno.EACCES, "Permission denied")

    def refuse(folder):
        raise OSError(code, text)

    monkeypatch.setattr(clipsam.paths, "_probe_write", refuse)
    return tmp_path / "out", "read-only file system" if kind == "read-only" else "permission denied"


@pytest.fixture
def no_model_loading(monkeypatch):
    import clipsam.models

    def fail(*args, **kwargs):
        raise AssertionError("a model was loaded before the output location was checked")

    monkeypatch.setattr(clipsam.models, "load_clip", fail)


@pytest.mark.parametrize("kind", ["file", "under-a-file", "read-only", "unwritable"])
@pytest.mark.parametrize("command", ["segment", "batch", "eval", "export"])
def test_bad_output_location_is_one_message_before_any_work(
    tmp_path, monkeypatch, capsys, no_model_loading, command, kind
):
    import numpy as np
    from PIL import Image

    from clipsam.cli import main

    from ..conftest import TINY_VIT

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    out, reason = _problem(tmp_path, monkeypatch, kind)
    model = ["--clip", TINY_VIT, "--random-weights"]
    argv = {
        "segment": ["segment", str(tmp_path / "a.png"), "--classes", "cat", "--out", str(out), *model, "--no-progress"],
        "batch": ["batch", str(tmp_path / "a.png"), "--classes", "cat", "--out", str(out), *model, "--no-progress"],
        "eval": [
            "eval",
            "--dataset",
            "voc21",
            "--root",
            str(tmp_path / "no-data"),
            "--out",
            str(out / "r.json"),
            *model,
        ],
        "export": ["export", "--out", str(out), *model, "--quiet"],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert reason in err and err.count("error:") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "taken.txt" / "batch_report.json").exists()


def test_library_writers_check_the_location_first(tmp_path):
    import numpy as np

    from clipsam import SegmentationResult
    from clipsam.batch import run_batch
    from clipsam.errors import OutputError
    from clipsam.integrations.ray import SegmentImages

    blocker = tmp_path / "taken.txt"
    blocker.write_text("a file")
    res = SegmentationResult(np.zeros((4, 4), np.int32), np.zeros((4, 4), np.float32), ("cat",))
    with pytest.raises(OutputError, match="is a file, not a folder"):
        res.save(blocker)

    def never():
        raise AssertionError("the segmenter was built before out_dir was checked")

    with pytest.raises(OutputError, match="taken.txt is a file"):
        SegmentImages(segmenter=never, out_dir=str(blocker / "sub"))
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(OutputError):
        run_batch([str(tmp_path / "a.png")], blocker, segmenter=never, progress=False)
    assert issubclass(OutputError, OSError) and issubclass(OutputError, ClipSamError)


# -- Ctrl-C: what was finished, how to resume, exit 130, no traceback --------------------------------------------
def _interrupt_after_first_result(argv, out, env_extra=None):
    """Run the CLI, send SIGINT once a first image's <name>.json exists, return the finished process.

    The child gets SIGINT's default disposition: a test run started as a background job of a shell without job
    control ignores SIGINT, and an ignored signal stays ignored across exec (Python then installs no
    KeyboardInterrupt handler), which a user's Ctrl-C at a terminal never meets."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsam.cli", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def finished() -> bool:
        try:
            return any(p.name != "batch_report.json" for p in out.rglob("*.json"))
        except FileNotFoundError:  # a .partial folder renamed away while it was listed
            return False

    deadline = time.time() + 120
    while time.time() < deadline and not finished():
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


@pytest.mark.parametrize("command", ["segment", "batch"])
def test_ctrl_c_says_what_was_finished_and_how_to_resume(tmp_path, many_images, command):
    import json

    from ..conftest import TINY_VIT

    out = tmp_path / "out"
    argv = [
        command,
        str(many_images),
        "--classes",
        "cat, grass",
        "--out",
        str(out),
        "--clip",
        TINY_VIT,
        "--random-weights",
        "--method",
        "clip",
        "--templates",
        "single",
        "--batch-size",
        "1",
        "--no-progress",
    ]
    rc, _, err = _interrupt_after_first_result(argv, out)
    finished = len([p for p in out.rglob("*.json") if p.name != "batch_report.json"])
    assert rc == 130, err
    assert "Traceback" not in err and f"clipsam {command}: interrupted (Ctrl-C)" in err, err
    if command == "segment":
        assert f"{finished} of 24 image(s) were finished and saved in {out}" in err and "clipsam batch" in err
    else:
        assert f"{finished} image(s) were segmented and saved in {out}" in err and "Run the same command again" in err
        assert json.loads((out / "batch_report.json").read_text())["interrupted"] is True


def test_ctrl_c_during_export_names_the_incomplete_folder(tmp_path, monkeypatch, capsys):
    import clipsam.export.engines
    from clipsam.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(clipsam.export.engines, "export_engines", interrupted)
    assert main(["export", "--out", str(tmp_path / "eng"), "--random-weights", "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "engine folder" in err and "incomplete" in err and "--overwrite" in err and "Traceback" not in err
