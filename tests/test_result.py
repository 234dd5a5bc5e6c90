"""SegmentationResult: overlay and save are exact and stay inside the memory budget (issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clipsam.result import SegmentationResult, _overlay_colours, palette


def _result(h=61, w=83, classes=5, image_dtype=np.uint8, seed=0, **kw):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, (h, w)).astype(np.int32)
    scores = rng.random((h, w)).astype(np.float32)
    image = rng.integers(0, 256, (h, w, 3)).astype(image_dtype)
    if image_dtype != np.uint8:
        image = image * 1.3 - 20  # out of range on purpose: clipped
    return SegmentationResult(labels, scores, tuple(f"class {i}" for i in range(classes)), image, **kw)


def _reference_overlay(res, alpha=0.5):
    """The whole-image float32 overlay this module used to build."""
    colours = _overlay_colours(len(res.classes))
    base = res.image if res.image is not None else np.zeros(res.labels.shape + (3,), np.uint8)
    base = np.clip(base, 0, 255).astype(np.uint8) if base.dtype != np.uint8 else base
    return (base.astype(np.float32) * (1 - alpha) + colours[res.labels].astype(np.float32) * alpha).astype(np.uint8)


@pytest.mark.parametrize("alpha", [0.5, 0.25, 0.3, 1.0, 0.0])
@pytest.mark.parametrize("image_dtype", [np.uint8, np.float32])
def test_overlay_in_strips_equals_the_whole_image_formula(alpha, image_dtype):
    res = _result(image_dtype=image_dtype, max_memory_mb=0.01)  # a few rows per strip
    got = np.asarray(res.overlay(alpha=alpha, legend=False))
    np.testing.assert_array_equal(got, _reference_overlay(res, alpha))
    with_legend = np.asarray(res.overlay(alpha=alpha))
    np.testing.assert_array_equal(with_legend[: res.labels.shape[0]], got)
    assert with_legend.shape[0] == res.labels.shape[0] + 8 + 14 * len(res.pixel_fractions())


def test_saved_pngs_decode_to_the_same_pixels(tmp_path):
    res = _result(max_memory_mb=0.01)
    paths = res.save(tmp_path, "x")
    labels = Image.open(paths["labels"])
    assert labels.mode == "P" and np.array_equal(np.asarray(labels), res.labels)
    assert np.array_equal(np.asarray(labels.getpalette()).reshape(-1, 3)[:256], palette())
    np.testing.assert_array_equal(np.asarray(Image.open(paths["overlay"])), np.asarray(res.overlay()))
    import cv2

    np.testing.assert_array_equal(cv2.imread(str(paths["overlay"]))[:, :, ::-1], np.asarray(res.overlay()))
    summary = json.loads(paths["summary"].read_text())
    assert summary["height"] == 61 and abs(sum(summary["pixel_fractions"].values()) - 1) < 1e-5
    none = SegmentationResult(res.labels, res.scores, res.classes)  # no image: colours on black
    np.testing.assert_array_equal(
        np.asarray(Image.open(none.save(tmp_path, "n")["overlay"]))[:61], _reference_overlay(none)
    )


SAVE_MEMORY = r"""
import json, sys
import numpy as np
from clipsam.result import SegmentationResult

h, w, budget = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
yy, xx = np.mgrid[0:h, 0:w]
labels = ((yy // 500 + xx // 700) % 6).astype(np.int32)  # smooth maps: fast to compress
image = np.stack([(yy % 256), (xx % 256), ((yy + xx) % 256)], axis=-1).astype(np.uint8)
res = SegmentationResult(labels, np.full((h, w), 0.5, np.float32), tuple("abcdef"), image)
res.max_memory_mb = budget  # what the segmenter sets (its max_memory_mb)
small = SegmentationResult(labels[:64, :64].copy(), res.scores[:64, :64].copy(), res.classes, image[:64, :64].copy())
del yy, xx

def status(key):  # MiB
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

small.save(sys.argv[4], "warm")  # imports, allocator
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS:")
res.save(sys.argv[4], "big")
print(json.dumps({"before": before, "peak": status("VmHWM:")}))
"""


def test_save_stays_inside_the_memory_budget(tmp_path):
    """Saving a 2000 x 4000 result grows the process by less than its budget (the float32 overlay took ~0.3 GB)."""
    budget = 100.0
    out = subprocess.run(
        [sys.executable, "-c", SAVE_MEMORY, "2000", "4000", str(budget), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    grown = r["peak"] - r["before"]
    assert grown <= budget, r
    assert Image.open(tmp_path / "big_overlay.png").size == (4000, 2000 + 8 + 14 * 6)


CLI_MEMORY = r"""
import json, sys, warnings
from pathlib import Path
import cv2
import numpy as np
warnings.simplefilter("ignore")
from clipsam.cli import main

h, w, budget, folder, arch = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), sys.argv[5]
yy, xx = np.mgrid[0:h, 0:w]
cv2.imwrite(str(folder / "big.png"), np.stack([yy % 256, xx % 256, (yy + xx) % 256], axis=-1).astype(np.uint8))
cv2.imwrite(str(folder / "small.png"), np.zeros((64, 96, 3), np.uint8))
del yy, xx

def run(name, out):
    assert main(["segment", str(folder / name), "--classes", "cat, dog", "--out", str(folder / out), "--clip", arch,
                 "--random-weights", "--method", "clip", "--templates", "single", "--no-progress",
                 "--max-memory-mb", budget]) == 0

def status(key):  # MiB
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

run("small.png", "warm")  # imports, model, allocator
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS:")
run("big.png", "out")
print(json.dumps({"before": before, "peak": status("VmHWM:")}))
"""


def test_cli_segment_stays_inside_the_memory_budget(tmp_path):
    """clipsam segment of a 2000 x 3000 photo with --max-memory-mb 100 grows the process by at most the budget, the
    result's own arrays (labels, scores: 8 B/px) and the decoded photo (3 B/px), plus 64 MiB (the float32 overlay of
    the old save() alone took ~200 MB)."""
    from .conftest import TINY_VIT

    h, w, budget = 2000, 3000, 100.0
    out = subprocess.run(
        [sys.executable, "-c", CLI_MEMORY, str(h), str(w), str(int(budget)), str(tmp_path), TINY_VIT],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    allowed = budget + h * w * (8 + 3) / 2**20 + 64
    assert r["peak"] - r["before"] <= allowed, (r, allowed)
    assert np.asarray(Image.open(tmp_path / "out" / "big_labels.png")).shape == (h, w)


def test_a_result_built_by_hand_is_checked_when_built():
    from clipsam.errors import InvalidInputError

    labels, scores = np.zeros((4, 5), np.int32), np.zeros((4, 5), np.float32)
    labels[0, 0] = 2
    bad = [
        (dict(labels=labels.astype(np.float32)), r"labels must be an \(H, W\) integer array, got float32 array"),
        (dict(labels=labels[None]), r"labels must be an \(H, W\) integer array, got int32 array \(1, 4, 5\)"),
        (
            dict(scores=scores[:3]),
            r"scores must be an array of the labels' shape \(4, 5\) .*got float32 array \(3, 5\)",
        ),
        (dict(classes=("cat", "dog")), r"values in \[0, 2\], but there are 2 classes.*\(0 \.\. 1\)"),  # was IndexError
        (dict(labels=labels - 3), r"values in \[-3, -1\]"),  # was a ValueError from overlay()
        (dict(classes="cat"), "classes must be a sequence of class-name strings"),
        (dict(image=np.zeros((4, 6, 3), np.uint8)), r"image must be None or of shape \(4, 5, 3\)"),
        (dict(dense_labels=np.zeros((5, 4), np.int32)), r"dense_labels must be None or of shape \(4, 5\)"),
    ]
    for changes, why in bad:
        kw = {**dict(labels=labels, scores=scores, classes=("a", "b", "c")), **changes}
        with pytest.raises(InvalidInputError, match=why):
            SegmentationResult(**kw)
    ok = SegmentationResult(labels.astype(np.uint8), np.zeros((0, 0), np.float32), ("a", "b", "c"))  # no scores
    assert ok.pixel_fractions()["c"] == pytest.approx(1 / 20)


def test_save_keeps_its_files_inside_the_output_folder(tmp_path):
    from clipsam.errors import InvalidInputError

    res = SegmentationResult(np.zeros((4, 5), np.int32), np.zeros((4, 5), np.float32), ("a",))
    for stem in ("../escape", "a/../../b", str(tmp_path / "abs"), "", " ", 5):
        with pytest.raises(InvalidInputError, match="must name the files inside the output folder"):
            res.save(tmp_path / "out", stem)
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "abs.json").exists()
    assert res.save(tmp_path / "out", "album/photo")["summary"] == tmp_path / "out" / "album" / "photo.json"
