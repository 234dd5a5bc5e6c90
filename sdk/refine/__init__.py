"""CLIP-guided SAM2 refinement: dense CLIP labels -> point/box prompts -> SAM2 masks -> merged labels.

``extract_prompts`` and ``merge_masks`` are numpy/OpenCV only and shared by every backend. The PyTorch
backend, ``Sam2Refiner``, loads lazily, so importing ``clipsam.refine`` does not import torch.
"""

from __future__ import annotations

from typing import Any

from .config import RefineConfig
from .merge import Instance, MergeResult, mask_to_rle, merge_masks, rle_to_mask
from .prompts import PromptSet, extract_prompts

__all__ = [
    "RefineConfig",
    "PromptSet",
    "extract_prompts",
    "Instance",
    "MergeResult",
    "merge_masks",
    "mask_to_rle",
    "rle_to_mask",
    "Sam2Refiner",
]

_LAZY = {"Sam2Refiner": "sam2_backend", "Sam2Embedding": "sam2_backend"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
