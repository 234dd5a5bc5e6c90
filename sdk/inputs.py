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
from .paths import check_usable, input_error, shown
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


def _outside(f: Path, skip: Path | None) -> bool:
    """Whether ``f`` lies outside the folder ``skip`` (resolved; None: everything is outside)."""
    return skip is None or not f.resolve().is_relative_to(skip)


def _found(item: str, skip: Path | None = None) -> list[tuple[Path, Path]]:
    p = check_usable(Path(item), "input", ClipSamError)
    beside = f" outside the output folder {shown(skip)}" if skip is not None else ""
    if p.is_dir():
        found = [
            (f, f.relative_to(p))
            for f in sorted(p.rglob("*"))
            if f.suffix.lower() in IMAGE_SUFFIXES
            and f.is_file()
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
            and _outside(f, skip)
        ]
        if not found:
            raise ClipSamError(f"folder {shown(item)} holds no images ({', '.join(IMAGE_SUFFIXES)}){beside}")
        return found
    if p.is_file():
        return [(p, Path(p.name))]  # named explicitly: taken even from inside the output folder
    if any(ch in item for ch in "*?["):
        root = _glob_root(item)
        found = [
            (Path(f), Path(f).relative_to(root))
            for f in sorted(glob.glob(item, recursive=True))
            if Path(f).is_file() and _outside(Path(f), skip)
        ]
        if not found:
            raise ClipSamError(f"no file matches {item!r}{beside}")
        return found
    raise input_error(item, "image file", ClipSamError)


def expand_inputs(items: list[str], out: str | Path | None = None) -> list[InputImage]:
    """Files, folders (recursive) and glob patterns -> images with output names, in order, without duplicates.

    ``out``: the output folder; folders and patterns skip the files under it (an output folder inside an input
    folder would otherwise have its own label and overlay images segmented on the next run)."""
    skip = None if out is None else Path(out).expanduser().resolve()
    out_list: list[InputImage] = []
    seen: set[str] = set()
    names: set[str] = set()
    for item in items:
        for path, rel in _found(item, skip):
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
            out_list.append(InputImage(str(path), name))
    return out_list
