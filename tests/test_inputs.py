"""Input expansion: files, folders (recursive) and globs, with output names that mirror the input tree."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipsam.inputs import expand_inputs

from .test_batch import make_images


def _rows(items):
    return [{"path": im.path, "name": im.name} for im in expand_inputs(items)]


def test_outputs_mirror_the_tree(tmp_path):

    make_images(tmp_path / "in", 3, bad=False)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / "a" / "img1.jpg")  # same stem as img1.png
    (tmp_path / "in" / ".cache").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / ".cache" / "x.png")  # hidden: skipped
    rows = _rows([str(tmp_path / "in"), str(tmp_path / "in" / "b" / "img0.png")])  # img0 twice: once
    names = [r["name"] for r in rows]
    assert names == ["a/img1", "a/img1_png", "b/img0", "b/img2"]
    globbed = _rows([str(tmp_path / "in" / "*" / "*.png")])
    assert [r["name"] for r in globbed] == ["a/img1", "b/img0", "b/img2"]
    with pytest.raises(Exception, match="no file matches"):
        _rows([str(tmp_path / "none" / "*.png")])


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(Exception, match="image file not found"):
        expand_inputs([str(tmp_path / "nope.jpg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="holds no images"):
        expand_inputs([str(tmp_path / "empty")])


def test_an_output_folder_inside_an_input_folder_is_not_read_back(tmp_path):
    make_images(tmp_path / "in", 2, bad=False)
    out = tmp_path / "in" / "labels"
    (out / "b").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(out / "b" / "img0_labels.png")  # an earlier run's outputs
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(out / "b" / "img0_overlay.png")
    every = [im.name for im in expand_inputs([str(tmp_path / "in")])]
    assert "labels/b/img0_labels" in every  # without out=, a folder lists everything
    for items in ([str(tmp_path / "in")], [str(tmp_path / "in" / "**" / "*.png")]):
        names = [im.name for im in expand_inputs(items, out=out)]
        assert not any("labels" in n or "overlay" in n for n in names) and len(names) == 2
    # named explicitly, a file inside the output folder is still taken; a folder with nothing else is an error
    named = expand_inputs([str(out / "b" / "img0_overlay.png")], out=out)
    assert [im.name for im in named] == ["img0_overlay"]
    with pytest.raises(Exception, match=r"holds no images .* outside the output folder"):
        expand_inputs([str(out)], out=out)


def test_a_name_too_long_for_the_file_system_is_a_clipsam_error(tmp_path):
    from clipsam.errors import ClipSamError, OutputError
    from clipsam.paths import input_file, output_dir

    long = str(tmp_path / ("x" * 300))  # one name over the 255-byte limit
    with pytest.raises(ClipSamError, match=r"input .* is not a usable path: .*Use a shorter name"):
        expand_inputs([long])
    with pytest.raises(ClipSamError, match="image file .* is not a usable path"):
        input_file(long, "image file")
    with pytest.raises(OutputError, match="is not a usable path"):
        output_dir(long)
    with pytest.raises(ClipSamError, match=r"\(5000 characters\) is not a usable path"):
        input_file("y" * 5000, "image file")  # shown cut short


def test_special_files_and_empty_output_paths_are_named_as_such(tmp_path):
    import os

    from clipsam.errors import ClipSamError, OutputError
    from clipsam.paths import input_file, output_dir, output_file

    with pytest.raises(ClipSamError, match="/dev/null is not a regular file"):  # it said "not found"
        input_file("/dev/null", "image file")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ClipSamError, match="pipe is not a regular file"):
        input_file(tmp_path / "pipe", "image file")
    for empty in ("", "  "):
        with pytest.raises(OutputError, match=r"output folder is an empty path; name a folder \(use '\.'"):
            output_dir(empty)  # it wrote into the current folder
        with pytest.raises(OutputError, match="empty path"):
            output_file(empty)
        with pytest.raises(ClipSamError, match=r"image file is an empty path"):  # it said "image file . is a folder"
            input_file(empty, "image file")


def test_a_path_with_a_newline_or_escape_is_shown_quoted(tmp_path):
    """A name holding a character that does not print as itself is quoted with escapes, so the message stays one
    line and says exactly which name was given."""
    from clipsam.errors import ClipSamError
    from clipsam.models import read_state_dict
    from clipsam.paths import input_file, shown
    from clipsam.vocabulary import parse_class_file

    assert shown(tmp_path / "a b.jpg") == str(tmp_path / "a b.jpg")  # printable: as typed
    odd = str(tmp_path / "a\nb\x1b[31m.jpg")
    assert shown(odd) == repr(odd)
    for call in (
        lambda: input_file(odd, "image file"),
        lambda: expand_inputs([odd]),
        lambda: parse_class_file(odd),
        lambda: read_state_dict(odd),
    ):
        with pytest.raises(ClipSamError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "\x1b" not in message and r"a\nb\x1b[31m.jpg" in message, message
    (tmp_path / "in\tfolder").mkdir()
    with pytest.raises(ClipSamError, match=r"folder '.*in\\tfolder' holds no images"):
        expand_inputs([str(tmp_path / "in\tfolder")])
