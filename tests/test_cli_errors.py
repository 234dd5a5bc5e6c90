"""The command line's error policy (issue 14): one message naming the problem and the fix, no traceback, a non-zero
exit, checked before any model loads; Ctrl-C says what was finished and how to resume (exit 130)."""

from __future__ import annotations

import pytest

from clipsam.errors import ClipSamError


def test_image_arguments_that_are_urls_or_missing(tmp_path):
    from clipsam.batch import plan_rows
    from clipsam.cli import expand_images

    with pytest.raises(ClipSamError, match="'https://example.com/a.jpg' is a URL; clipsam does not fetch URLs"):
        expand_images(["https://example.com/a.jpg"])
    with pytest.raises(ClipSamError, match="is a URL"):
        plan_rows(["s3://bucket/photos/a.jpg"])
    with pytest.raises(ClipSamError, match=r"image file not found: .*nope.jpg"):
        expand_images([str(tmp_path / "nope.jpg")])
