"""Paths the user names: input files checked with a message that says what is wrong (a URL, a folder, a missing
file, not a path at all).

clipsam reads local files only: it never fetches URLs (no network access from the library, no size or time limits
to choose for you). Download a remote image, class file or checkpoint first and pass the local path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ClipSamError, InvalidInputError, InvalidTypeError

__all__ = ["is_url", "input_error", "input_file"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # "https://", "s3://"; also "https:/" as pathlib collapses it


def is_url(value) -> bool:
    """Whether ``value`` (a str or os.PathLike) starts with a URL scheme such as ``https://`` or ``s3://``."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return isinstance(value, str) and bool(_URL.match(value))


def input_error(value, what: str, error: type[ClipSamError] = InvalidInputError, folder_hint: str = "",
                missing_hint: str = "") -> ClipSamError:
    """The error for ``value`` that does not name an existing file: a URL, a folder, or a missing path.

    Arguments:
        value: what the user passed.
        what: its role in the message ("image file", "class file", "checkpoint").
        error: the ClipSamError subclass to build.
        folder_hint, missing_hint: sentences appended when it is a folder or does not exist.
    """
    if is_url(value):
        return error(f"{what} {os.fspath(value)!r} is a URL; clipsam does not fetch URLs (the library makes no "
                     "network requests). Download it first and pass the local file.")
    path = Path(value)
    if path.is_dir():
        return error(f"{what} {path} is a folder, not a file." + (f" {folder_hint}" if folder_hint else ""))
    return error(f"{what} not found: {path}." + (f" {missing_hint}" if missing_hint else ""))


def input_file(value, what: str, error: type[ClipSamError] = InvalidInputError, folder_hint: str = "",
               missing_hint: str = "") -> Path:
    """``value`` as the Path of an existing file, or the error of ``input_error`` (``InvalidTypeError`` when it is
    not a str or os.PathLike)."""
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise InvalidTypeError(f"{what} must be a path (str or os.PathLike), got {type(value).__name__} {value!r:.80}.")
    path = Path(value)
    if is_url(value) or not path.is_file():
        raise input_error(value, what, error, folder_hint, missing_hint)
    return path
