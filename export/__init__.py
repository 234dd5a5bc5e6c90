"""clipsam.export: ONNX graphs of the CLIP and SAM2 models, validated, and the engine folder the runtime reads.

    from clipsam.export import export_engines
    export_engines("engines/", clip="ViT-B-16", clip_weights="openai", method="resclip", preset="voc21",
                   sam2="sam2.1_hiera_t")

Exporting needs torch, open_clip, onnx (and sam2 for the SAM2 graphs); importing this package imports none of
them. The engine format (graph names, files, IO) is the runtime's: ``clipsam.engine.io_names``.
"""

from __future__ import annotations

__all__ = ["export_engines", "export_component", "ExportValidationError", "ValidationRow"]

_LAZY = {
    "export_engines": ("clipsam.export.engines", "export_engines"),
    "export_component": ("clipsam.export.component", "export_component"),
    "ExportValidationError": ("clipsam.export.component", "ExportValidationError"),
    "ValidationRow": ("clipsam.export.component", "ValidationRow"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clipsam.export' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
