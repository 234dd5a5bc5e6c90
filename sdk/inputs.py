"""Input images named on a command line: files, folders (recursive) and glob patterns, with output names.

Each image gets an output name relative to what named it (``photos/a/b.jpg`` from ``photos/`` is ``a/b``), so
outputs mirror the input tree. An image named twice (a folder and a glob) is listed once; two files that would
share a name (``a.jpg`` beside ``a.png``) get the suffix appended (``a_png``). Hidden files and folders are skipped.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from .errors import ClipSamError
from .paths import input_error
from .preprocess import IMAGE_SUFFIXES


@dataclass(frozen=True)
class InputImage:
    """An image file and the name of its outputs (relative, no suffix, '/'-separated)."""

    path: str
    name: str


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    stop = next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), len(parts))
    return Path(*parts[:stop]) if stop else Path(".")


def _found(item: str) -> list[tuple[Path, Path]]:
    p = Path(item)
    if p.is_dir():
        found = [
            (f, f.relative_to(p))
            for f in sorted(p.rglob("*"))
            if f.suffix.lower() in IMAGE_SUFFIXES
            and f.is_file()
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
        ]
        if not found:
            raise ClipSamError(f"folder {item} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return found
    if p.is_file():
        return [(p, Path(p.name))]
    if any(ch in item for ch in "*?["):
        root = _glob_root(item)
        found = [
            (Path(f), Path(f).relative_to(root)) for f in sorted(glob.glob(item, recursive=True)) if Path(f).is_file()
        ]
        if not found:
            raise ClipSamError(f"no file matches {item!r}")
        return found
    raise input_error(item, "image file", ClipSamError)


def expand_inputs(items: list[str]) -> list[InputImage]:
    """Files, folders (recursive) and glob patterns -> images with output names, in order, without duplicates."""
    out: list[InputImage] = []
    seen: set[str] = set()
    names: set[str] = set()
    for item in items:
        for path, rel in _found(item):
            key = str(path.resolve())
            if key in seen:
                continue
            seen.add(key)
            base = rel.with_suffix("").as_posix()
            name = base if base not in names else f"{base}_{path.suffix.lstrip('.').lower()}"
            k = 1
            while name in names:
                name, k = f"{base}_{k}", k + 1
            names.add(name)
            out.append(InputImage(str(path), name))
    return out
