"""The on-disk text-embedding cache, shared by the PyTorch and ONNX Runtime front ends (torch-free).

A vocabulary's (Q, E) float32 query embeddings are written once per machine as ``<key>.npy``, where ``key`` is the
SHA-256 of everything that changes them (``text_cache_key``): the model weights' hash (``clipsam.hashing.
state_dict_sha256``; engine folders record it as ``clip.weights_sha256``), the CLIP architecture, its activation
(quick_gelu), the text encoder's precision, the queries, the templates, the prompt configuration
(``ResolvedPrompts.key``: context prompts, disambiguation, descriptions by content digest, enrichment settings) and
the clipsam version. Embeddings from either backend are the same up to fp32 rounding, so one backend reads what the
other wrote.

Location: ``$CLIPSAM_CACHE_DIR/text`` if set, else ``$XDG_CACHE_HOME/clipsam/text``, else
``~/.cache/clipsam/text``. Off with ``CLIPSAM_TEXT_CACHE=0`` (or ``text_disk_cache=False``, CLI
``--no-text-cache``). Writes are atomic (a temporary file in the same folder, then ``os.replace``); after each
write the oldest of its files (by last use) are deleted until they take at most ``max_bytes``; only ``<key>.npy``
files are counted or deleted, never other files of the folder. Files are read with
``allow_pickle=False``; a file that cannot be read or does not hold a finite float32 array of the expected shape is
ignored with one warning and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .errors import ConfigError

ENV_DIR = "CLIPSAM_CACHE_DIR"
ENV_SWITCH = "CLIPSAM_TEXT_CACHE"
FORMAT = 1  # bump when the stored arrays change meaning
DEFAULT_MAX_BYTES = 256 << 20  # 256 MiB: ~250 vocabularies of 500 classes at E=512
_ON, _OFF = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def default_cache_dir() -> Path:
    """``$CLIPSAM_CACHE_DIR/text``, else ``$XDG_CACHE_HOME/clipsam/text``, else ``~/.cache/clipsam/text``."""
    root = os.environ.get(ENV_DIR)
    if root:
        return Path(root).expanduser() / "text"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "clipsam" / "text"


def env_enabled() -> bool:
    """``CLIPSAM_TEXT_CACHE``: unset or 1/true/on/yes turn the disk cache on, 0/false/off/no turn it off."""
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    if value in ("",) + _ON:
        return True
    if value in _OFF:
        return False
    raise ConfigError(f"{ENV_SWITCH}={value!r} is not understood; set it to 0 (off) or 1 (on), or unset it")


def resolve_text_store(setting) -> TextStore | None:
    """The store a ``text_disk_cache`` argument asks for.

    Arguments:
        setting: None (on unless ``CLIPSAM_TEXT_CACHE=0``, at ``default_cache_dir()``), False (off), True (on at
            the default location, whatever the environment says) or a folder path.
    """
    if setting is None:
        return TextStore(default_cache_dir()) if env_enabled() else None
    if setting is False:
        return None
    if setting is True:
        return TextStore(default_cache_dir())
    if isinstance(setting, (str, os.PathLike)):
        return TextStore(Path(setting).expanduser())
    raise ConfigError(
        f"text_disk_cache must be None (default), True, False or a folder path, got {type(setting).__name__} "
        f"{setting!r:.80}"
    )


def text_cache_key(model: dict, queries, templates, prompts_key: tuple) -> str:
    """Hex SHA-256 naming a vocabulary's embeddings.

    Arguments:
        model: {"arch", "weights_sha256", "quick_gelu", "precision"} of the text encoder.
        queries: the vocabulary's queries, in order.
        templates: the resolved templates, in order.
        prompts_key: ``ResolvedPrompts.key`` (``()`` for templates only).
    """
    from . import __version__

    fields = {
        "format": FORMAT,
        "clipsam": __version__,
        "model": {k: model[k] for k in ("arch", "weights_sha256", "quick_gelu", "precision")},
        "queries": list(queries),
        "templates": list(templates),
        "prompts": list(prompts_key),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _is_key_name(name: str) -> bool:
    """Whether ``name`` is a cache file's: ``<key>.npy`` with ``key`` a SHA-256 in lowercase hex."""
    stem, dot, ext = name.partition(".")
    return ext == "npy" and len(stem) == 64 and all(c in "0123456789abcdef" for c in stem)


class TextStore:
    """A folder of ``<key>.npy`` embedding files (module docstring): ``load`` and ``save``.

    Arguments:
        folder: where the files live (created on the first write).
        max_bytes: most bytes of ``.npy`` files kept; the least recently used go first.
    """

    def __init__(self, folder, max_bytes: int = DEFAULT_MAX_BYTES):
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        self._write_warned = False

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npy"

    def load(self, key: str, shape: tuple[int, int | None]) -> np.ndarray | None:
        """The stored (Q, E) float32 array, or None when there is none or it cannot be trusted (one warning).

        ``shape``: the expected (Q, E); E may be None (any width)."""
        path = self.path(key)
        try:
            arr = np.load(path, allow_pickle=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except Exception as e:  # truncated, not an .npy, an object array, unreadable
            self._distrust(path, f"it cannot be read ({type(e).__name__}: {e})")
            return None
        ok = isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.ndim == 2
        if not ok or arr.shape[0] != shape[0] or shape[1] not in (None, arr.shape[1]):
            got = f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}"
            want = "x".join("E" if d is None else str(d) for d in shape)
            self._distrust(path, f"it holds {got}, not float32 {want}")
            return None
        if not np.isfinite(arr).all():
            self._distrust(path, "it holds non-finite values")
            return None
        try:
            os.utime(path)  # last use, for the eviction order
        except OSError:
            pass
        return arr

    def save(self, key: str, arr: np.ndarray) -> None:
        """Write atomically, then evict the least recently used files beyond ``max_bytes``; a folder that cannot
        be written is reported once (a warning naming the way out) and the embeddings stay in memory only."""
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=self.folder)
            with os.fdopen(fd, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            os.replace(tmp, self.path(key))
            tmp = None
        except OSError as e:
            if not self._write_warned:
                self._write_warned = True
                warnings.warn(
                    f"clipsam: cannot write the text-embedding cache in {self.folder} ({e}); text embeddings "
                    f"will be encoded again by the next process. Set {ENV_DIR} to a writable folder, or "
                    f"{ENV_SWITCH}=0 to turn the cache off.",
                    UserWarning,
                    stacklevel=3,
                )
            return
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        self.evict()

    def evict(self) -> None:
        """Delete the least recently used cache files until the folder holds at most ``max_bytes`` of them. Only
        this cache's own files (``<64 hex digits>.npy``, the names ``path`` gives) are counted or deleted: a
        folder passed as ``text_disk_cache`` may hold the user's own ``.npy`` files."""
        files = []
        for p in self.folder.glob("*.npy"):
            if not _is_key_name(p.name):
                continue
            try:
                st = p.stat()
            except OSError:  # deleted meanwhile by another process
                continue
            files.append((st.st_mtime, st.st_size, p))
        files.sort()
        total = sum(size for _, size, _ in files)
        for _, size, p in files:
            if total <= self.max_bytes:
                break
            try:
                p.unlink()
            except OSError:
                continue
            total -= size

    def _distrust(self, path: Path, why: str) -> None:
        warnings.warn(
            f"clipsam: ignoring the cached text embeddings {path}: {why}; encoding them again and rewriting the file.",
            UserWarning,
            stacklevel=4,
        )
