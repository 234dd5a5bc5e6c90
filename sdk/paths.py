"""Paths the user names: input files checked with a message that says what is wrong (a URL, a folder, a missing
file, not a path at all), and output locations checked before any work (``output_dir``, ``output_file``): a file
where a folder is needed, a folder nested under a file, a read-only file system or a folder without write permission
is an ``OutputError`` at once, not after every image was segmented.

clipsam reads local files only: it never fetches URLs (no network access from the library, no size or time limits
to choose for you). Download a remote image, class file or checkpoint first and pass the local path.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

from .errors import ClipSamError, InvalidInputError, InvalidTypeError, OutputError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # "https://", "s3://"; also "https:/" as pathlib collapses it


def is_url(value) -> bool:
    """Whether ``value`` (a str or os.PathLike) starts with a URL scheme such as ``https://`` or ``s3://``."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return isinstance(value, str) and bool(_URL.match(value))


def shown(path) -> str:
    """``path`` as a message shows it: as typed, or quoted with escapes (``repr``) when it holds a character that
    would not print as itself (a newline, a tab, a terminal escape), so the message stays one line and says
    exactly which name was given."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        return repr(text)
    return text if text.isprintable() else repr(text)


def check_usable(path: Path, what: str, error: type[ClipSamError] = InvalidInputError) -> Path:
    """``path`` itself, or ``error`` when the operating system cannot even look it up: a name longer than the file
    system allows (ENAMETOOLONG), which ``Path.is_file``/``exists`` raise as a bare OSError instead of answering."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            text = shown(path)
            text = text if len(text) <= 120 else f"{text[:100]}...({len(str(path))} characters)"
            raise error(
                f"{what} {text} is not a usable path: {e.strerror or 'file name too long'} (a file or folder name "
                "is limited to 255 bytes on most file systems, a whole path to 4096). Use a shorter name."
            ) from None
    except ValueError:  # an embedded NUL: the callers' own checks say what is wrong with it
        pass
    return path


def input_error(
    value, what: str, error: type[ClipSamError] = InvalidInputError, folder_hint: str = "", missing_hint: str = ""
) -> ClipSamError:
    """The error for ``value`` that does not name an existing file: a URL, a folder, or a missing path.

    Arguments:
        value: what the user passed.
        what: its role in the message ("image file", "class file", "checkpoint").
        error: the ClipSamError subclass to build.
        folder_hint, missing_hint: sentences appended when it is a folder or does not exist.
    """
    if is_url(value):
        return error(
            f"{what} {os.fspath(value)!r} is a URL; clipsam does not fetch URLs (the library makes no "
            "network requests). Download it first and pass the local file."
        )
    path = check_usable(Path(value), what, error)
    if path.is_dir():
        return error(f"{what} {shown(path)} is a folder, not a file." + (f" {folder_hint}" if folder_hint else ""))
    if path.exists():  # a device, FIFO or socket: there is something, but not a file to read
        return error(f"{what} {shown(path)} is not a regular file (a device, pipe or socket); pass a file.")
    return error(f"{what} not found: {shown(path)}." + (f" {missing_hint}" if missing_hint else ""))


def input_file(
    value, what: str, error: type[ClipSamError] = InvalidInputError, folder_hint: str = "", missing_hint: str = ""
) -> Path:
    """``value`` as the Path of an existing file, or the error of ``input_error`` (``InvalidTypeError`` when it is
    not a str or os.PathLike)."""
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise InvalidTypeError(f"{what} must be a path (str or os.PathLike), got {type(value).__name__} {value!r:.80}.")
    if not os.fspath(value).strip() and not os.path.isfile(value):  # Path("") is "." (a folder): say so
        raise error(f"{what} is an empty path ({os.fspath(value)!r}); give the file's path.")
    path = check_usable(Path(value), what, error)
    if is_url(value) or not path.is_file():
        raise input_error(value, what, error, folder_hint, missing_hint)
    return path


def output_dir(value, what: str = "output folder") -> Path:
    """Create (if needed) and check the folder ``value`` for writing; returns its Path.

    Raises:
        OutputError: it is a file, lies under a file, is on a read-only file system, or cannot be written.
        InvalidTypeError: ``value`` is not a path.
    """
    path = _path(value, what)
    if path.exists() and not path.is_dir():
        raise OutputError(
            f"{what} {shown(path)} is a file, not a folder. Choose a folder (it is created if missing), or move the file away."
        )
    above = path
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise OutputError(
            f"{what} {shown(path)} cannot be created: {shown(above)} is a file, not a folder. Choose another location."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe_write(path)
    except OSError as e:
        raise OutputError(f"{what} {shown(path)} {_why_not_writable(e)}") from e
    return path


def output_file(value, what: str = "output file") -> Path:
    """Check that the file ``value`` can be written (its folder is created if needed); returns its Path."""
    path = _path(value, what)
    if path.is_dir():
        raise OutputError(f"{what} {shown(path)} is a folder; give a file name, e.g. {shown(path / 'results.json')}.")
    output_dir(path.parent, f"the folder of {what}")
    return path


def _path(value, what: str) -> Path:
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise InvalidTypeError(f"{what} must be a path (str or os.PathLike), got {type(value).__name__} {value!r:.80}.")
    if not os.fspath(value).strip():
        raise OutputError(f"{what} is an empty path; name a folder (use '.' for the current one).")
    if is_url(value):
        raise OutputError(
            f"{what} {os.fspath(value)!r} is a URL; clipsam writes local files only. Write to a local "
            "folder (or a mounted one) and copy the results."
        )
    return check_usable(Path(value).expanduser(), what, OutputError)


def _probe_write(folder: Path) -> None:
    """Create and remove a file in ``folder``: permission bits alone miss read-only mounts and ACLs."""
    fd, tmp = tempfile.mkstemp(prefix=".clipsam-write-test-", dir=folder)
    os.close(fd)
    os.unlink(tmp)


def _why_not_writable(e: OSError) -> str:
    if e.errno == errno.EROFS:
        return "is on a read-only file system. Choose a writable location."
    if e.errno in (errno.EACCES, errno.EPERM):
        return (
            "cannot be written: permission denied for this user. Choose a folder you can write to, or change its "
            "permissions."
        )
    if e.errno == errno.ENOSPC:
        return "cannot be written: no space left on the device. Free some space or choose another disk."
    if e.errno == errno.ENOTDIR:
        return "cannot be created: a part of the path is a file, not a folder. Choose another location."
    return f"cannot be written ({e.strerror or e}). Choose another location."
