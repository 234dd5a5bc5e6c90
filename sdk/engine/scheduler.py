"""Window scheduling for the exported dense encoder: windows of an image, batches of windows, shape profiles.

One image at the resized size (h, w) becomes a list of equally sized windows (``window_grid``: sliding crops, or
the whole image when ``slide_crop == 0``); ClearCLIP pads each crop to a patch multiple. Windows are run in
batches of at most ``max_batch``. The same rules give the min/opt/max shapes of TensorRT profiles
(``batch_sizes``, ``crop_sizes``), so the engines are built for exactly the batches the runtime sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DenseConfig
from ..dense.windows import pad_to_patch, window_grid
from ..preprocess import resize_shape

__all__ = ["WindowPlan", "plan_windows", "batch_slices", "batch_sizes", "crop_sizes", "TYPICAL_ASPECT"]

TYPICAL_ASPECT = 4 / 3  # the "opt" profile shape: a landscape 4:3 photo


@dataclass(frozen=True)
class WindowPlan:
    """The windows of one image.

    Attributes:
        boxes: (y1, y2, x1, x2) per window, in the resized image.
        crop: (h, w) of every window before padding.
        pad: (left, right, top, bottom) zero padding of each crop (ClearCLIP), or zeros.
    """

    boxes: tuple[tuple[int, int, int, int], ...]
    crop: tuple[int, int]
    pad: tuple[int, int, int, int]

    @property
    def padded(self) -> tuple[int, int]:
        """(H, W) of the encoder input."""
        l, r, t, b = self.pad
        return self.crop[0] + t + b, self.crop[1] + l + r


def plan_windows(h: int, w: int, cfg: DenseConfig, patch: int) -> WindowPlan:
    """Windows of a resized h x w image under ``cfg`` (sliding or whole image)."""
    if cfg.slide_crop > 0:
        boxes = tuple(window_grid(h, w, cfg.slide_crop, cfg.slide_stride))
        y1, y2, x1, x2 = boxes[0]
        crop = (y2 - y1, x2 - x1)
        pad = pad_to_patch(*crop, patch) if cfg.pad_crops else (0, 0, 0, 0)
        return WindowPlan(boxes, crop, pad)
    return WindowPlan(((0, h, 0, w),), (h, w), (0, 0, 0, 0))


def batch_slices(n: int, max_batch: int) -> list[slice]:
    """Consecutive batches of at most ``max_batch`` of n windows."""
    return [slice(s, min(n, s + max_batch)) for s in range(0, n, max_batch)]


def _typical(cfg: DenseConfig) -> tuple[int, int]:
    return resize_shape(cfg.short_side, int(round(cfg.short_side * TYPICAL_ASPECT)), cfg.short_side, cfg.long_side)


def batch_sizes(cfg: DenseConfig, max_batch: int) -> tuple[int, int, int]:
    """(min, opt, max) windows per encoder call: opt = the windows of a typical 4:3 image (capped at max)."""
    if cfg.slide_crop == 0:
        return 1, 1, 1
    h, w = _typical(cfg)
    n = len(window_grid(h, w, cfg.slide_crop, cfg.slide_stride))
    return 1, max(1, min(n, max_batch)), max_batch


def crop_sizes(cfg: DenseConfig, patch: int, max_side: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(min, opt, max) encoder input (H, W): a single patch up to a full crop (sliding) or ``max_side`` (whole)."""
    if cfg.slide_crop > 0:
        c = cfg.slide_crop
        full = c + sum(pad_to_patch(c, c, patch)[:2]) if cfg.pad_crops else c
        return (patch, patch), (c, c), (full, full)
    return (patch, patch), _typical(cfg), (max_side, max_side)
