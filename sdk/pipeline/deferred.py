"""Whole-image logits kept at the patch grid until the original size is asked for, a strip of rows at a time.

NACLIP and ResCLIP upsample whole-image logits in two steps, as their upstream code does: the patch grid
(Q, gh, gw) to the resized input (Q, h, w), then to the original size. Materialised, the middle image is Q x h x w
floats written and read once per image (300 MB for 500 queries on a 336 x 448 input: fresh pages on every call).
``Upsampled`` stands for it instead: finalisation asks for output rows, and only the rows of the middle image that
those read are computed (``HostOps.resize_twice``), bit for bit the same numbers. Backends without
``resize_twice`` (torch on a GPU, the torch reference ops) and the upstream-fp16 resize keep the materialised path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Upsampled:
    """(Q, h, w) logits = the grid upsampled to ``hw`` (mirrored along the width when ``flip``), never held whole.

    Attributes:
        grid: (Q, gh, gw) float32 patch logits (the backend's array type).
        hw: (h, w) the resized input's size.
        flip: the member was flipped: its logits are flipped back after the first step.
        resize_twice: the backend's ``HostOps.resize_twice``.
    """

    grid: Any
    hw: tuple[int, int]
    flip: bool
    resize_twice: Any

    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self.grid.shape[0]), int(self.hw[0]), int(self.hw[1]))

    def resize(self, size: tuple[int, int], rows: tuple[int, int] | None = None) -> Any:
        """Rows [r0, r1) (default all) of the logits upsampled again to ``size``: (Q, r1 - r0, W) float32."""
        return self.resize_twice(self.grid, self.hw, tuple(size), rows=rows, flip=self.flip)

    def full(self) -> Any:
        """The (Q, h, w) logits themselves (what the materialised path holds)."""
        return self.resize(self.hw)


def resize_logits(logits: Any, size: tuple[int, int], rows: tuple[int, int] | None, resize) -> Any:
    """Member logits ((Q, h, w) array or ``Upsampled``) upsampled to ``size`` (output ``rows`` only), with
    ``resize`` (``HostOps.resize``'s signature) for arrays."""
    if isinstance(logits, Upsampled):
        return logits.resize(size, rows)
    return resize(logits, size, rows=rows)


def materialise(logits: Any) -> Any:
    """The (Q, h, w) array of member logits, whichever form they are in."""
    return logits.full() if isinstance(logits, Upsampled) else logits
