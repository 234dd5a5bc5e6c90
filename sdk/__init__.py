"""clipsam: training-free open-vocabulary semantic segmentation (SCLIP / ClearCLIP / NACLIP / ResCLIP + SAM2).

    from clipsam import Segmenter
    seg = Segmenter.from_pretrained(clip="ViT-B-16", clip_weights="openai", method="resclip", preset="voc21")
    res = seg.segment("photo.jpg", classes=["cat", "sofa", "floor"])

Importing clipsam does not import torch: the PyTorch pipeline loads when a Segmenter is built.
"""

from __future__ import annotations

from .errors import ClipSamError

__version__ = "0.1.0"

__all__ = [
    "Segmenter",
    "SegmentationResult",
    "DenseConfig",
    "dense_config",
    "PromptConfig",
    "ClipSamError",
    "__version__",
]

_LAZY = {
    "Segmenter": ("clipsam.segmenter", "Segmenter"),
    "SegmentationResult": ("clipsam.result", "SegmentationResult"),
    "DenseConfig": ("clipsam.config", "DenseConfig"),
    "dense_config": ("clipsam.config", "dense_config"),
    "PromptConfig": ("clipsam.prompting", "PromptConfig"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clipsam' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
