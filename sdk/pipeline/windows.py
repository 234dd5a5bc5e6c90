"""Sliding-window geometry shared by every backend (numpy-free, torch-free).

Windows (crop c, stride t): n = max(H - c + t - 1, 0) // t + 1 per axis; y2 = min(i*t + c, H),
y1 = max(y2 - c, 0) (the last window is shifted back inside the image; an image smaller than the crop gets
one window of its own size). ClearCLIP pads each window to a patch multiple instead of dropping the remainder.
"""

from __future__ import annotations

from ..errors import ConfigError


def check_window_size(crop: int, patch: int) -> None:
    """ConfigError when sliding windows (``crop`` > 0) are smaller than one patch of the model."""
    if 0 < crop < patch:
        raise ConfigError(
            f"slide_crop={crop} is smaller than this model's {patch}x{patch} patch: use at least {patch} "
            "(or 0 for one pass over the whole image)"
        )


def window_grid(h: int, w: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Sliding windows (y1, y2, x1, x2) over an h x w image, in upstream order (rows, then columns)."""
    nh = max(h - crop + stride - 1, 0) // stride + 1
    nw = max(w - crop + stride - 1, 0) // stride + 1
    out = []
    for i in range(nh):
        for j in range(nw):
            y2, x2 = min(i * stride + crop, h), min(j * stride + crop, w)
            out.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return out


def pad_to_patch(h: int, w: int, patch: int) -> tuple[int, int, int, int]:
    """ClearCLIP's crop padding (left, right, top, bottom) up to a multiple of the patch size."""
    lr = (patch - w % patch) % patch
    tb = (patch - h % patch) % patch
    return lr // 2, lr - lr // 2, tb // 2, tb - tb // 2
