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
