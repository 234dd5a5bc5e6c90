"""Constants and helpers of the service tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import socket
import warnings
from functools import cache

import numpy as np

from ..conftest import TINY_VIT

KEY = "test-key-0123456789abcdef"
# Segmenter.from_pretrained keywords of the served model; the in-process reference is built from the same.
MODEL = dict(clip=TINY_VIT, clip_weights=None, method="resclip", preset="voc21", templates="single", short_side=112)
STRICT = dict(max_upload_bytes=60_000, max_pixels=40_000, max_classes=3, max_class_chars=10, request_timeout_s=0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_same(got, ref, what: str = "result") -> None:
    """HTTP result == in-process result: labels exactly, scores within 1e-5, same classes."""
    assert tuple(got.classes) == tuple(ref.classes), what
    assert got.labels.dtype == np.int32 and got.labels.shape == ref.labels.shape, what
    diff = int((got.labels != ref.labels).sum())
    assert diff == 0, f"{what}: {diff} labels differ"
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5, rtol=0, err_msg=what)


@cache
def _reference(changes: tuple):
    from clipsam import Segmenter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Segmenter.from_pretrained(**{**MODEL, **dict(changes)})


def reference_segmenter(**changes):
    """The in-process ``Segmenter`` of MODEL with from_pretrained overrides, built once per set of overrides."""
    return _reference(tuple(sorted(changes.items())))
