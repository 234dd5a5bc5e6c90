"""clipsam.engine: the ONNX Runtime backend, running exported engine folders with onnxruntime and numpy only.

    from clipsam.engine import EngineSegmenter       # or clipsam.Segmenter.from_engines(folder, providers=[...])
    seg = EngineSegmenter("engines/", providers=["cuda", "cpu"], refine=True)
    res = seg.segment("photo.jpg", classes="cat, sofa, floor")

Engine folders are written by ``clipsam export`` (``clipsam.export.export_engines``, which needs torch). Nothing in
this package imports torch, open_clip or sam2. Names load lazily.
"""

from __future__ import annotations

__all__ = ["EngineSegmenter", "ClipTokenizer", "load_manifest", "ProviderConfig"]

_LAZY = {
    "EngineSegmenter": "segmenter",
    "ClipTokenizer": "tokenizer",
    "load_manifest": "manifest",
    "ProviderConfig": "session",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
