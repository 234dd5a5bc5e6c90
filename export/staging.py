"""The engine folder an export writes: ``staged_folder`` (a context manager) prepares it before any model loads
and, when an existing folder is replaced, keeps that folder intact until the new one is complete.

    empty or new folder      written in place; an interrupted export leaves it without ``manifest.json`` (the
                             manifest is written last, so such a folder is never mistaken for a complete one)
    non-empty, overwrite     written into a hidden sibling (``.<name>.export-<pid>``), which replaces the folder
                             only when the export succeeded; a failed or interrupted export deletes the sibling
                             and leaves the old engines as they were
    non-empty, no overwrite  ``ConfigError``
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from clipsam.errors import ConfigError, OutputError


@contextlib.contextmanager
def staged_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield the folder to write the engines into (module docstring); on success it is ``out``'s content."""
    from clipsam.paths import output_dir

    if not (out.is_dir() and any(out.iterdir())):
        output_dir(out, "engine folder")  # a file, read-only or unwritable: an OutputError before any model loads
        yield out
        return
    if not overwrite:
        raise ConfigError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace an engine folder")
    output_dir(out, "engine folder")
    out = out.resolve()  # a symlinked folder: replace what it points to, and keep the link
    stage = out.parent / f".{out.name}.export-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)  # left by an earlier process of this pid
    try:
        stage.mkdir()
    except OSError as e:
        raise OutputError(
            f"cannot create {stage} beside {out} ({e.strerror or e}): an export replacing a folder writes the new "
            "engines beside it first, so that a failure leaves the old ones intact. Export into a new folder."
        ) from None
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.replaced-{os.getpid()}"
    os.rename(out, old)
    os.rename(stage, out)
    shutil.rmtree(old, ignore_errors=True)
