"""ResCLIP's SFR first pass on the host, from patch logits to patch labels, without (Q, H, W) temporaries.

The reference (``first_pass_labels_ref``) is the composition of the separate host operations, each allocating a
(B, Q, H, W) float32 array (90 MiB per crop for 150 queries on a 336 x 448 crop):

    up      = resize_bilinear(first, crop size)                  (B, Q, H, W)
    refined = pamr(crops, up)                                    (a copy)
    probs   = softmax(refined * logit_scale over Q)              (two more)
    labels  = patch_mode(argmax_Q probs, 0 where max_Q probs < temp_thd)   (B, H/p, W/p)

``FirstPass`` computes the same numbers with one (Q, H, W) buffer per thread, kept between calls: the resize
writes into it, PAMR refines it in place (``pamr.pamr_in_place``), and the softmax, threshold and argmax run on
blocks of a few rows at a time in small buffers (``softmax.softmax_labels``: the same float32 arithmetic,
reductions over Q in the same order), which stay in cache. Nothing of size queries x pixels is allocated per call,
so large vocabularies no longer pay for fresh pages on every crop, and the buffer is touched twice instead of about
a dozen times. The labels equal the reference's bit for bit (tests/ops/test_first_pass.py).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from .pamr import pamr, pamr_in_place
from .resize import resize_bilinear, softmax
from .sfr import patch_labels, patch_mode
from .softmax import softmax_labels

_F = np.float32


def first_pass_labels_ref(
    first: np.ndarray,
    crops: np.ndarray,
    patch: int,
    logit_scale: float,
    temp_thd: float,
    iters: int,
    dilations: Sequence[int],
) -> np.ndarray:
    """The reference: (B, Q, h, w) first-pass patch logits and (B, 3, H, W) crops -> (B, H//p, W//p) int64 patch
    labels (``patch_mode`` of the thresholded per-pixel argmax of softmax(logit_scale * PAMR(upsampled logits)))."""
    up = resize_bilinear(first, tuple(crops.shape[-2:]))
    refined = pamr(crops, up, iters, dilations) if iters > 0 else up
    return patch_labels(softmax(refined * logit_scale, axis=1), patch, temp_thd)


class FirstPass:
    """The fused first pass with one reusable (Q, H, W) buffer per calling thread (held until this object goes)."""

    def __init__(self):
        self._local = threading.local()

    def _buffer(self, shape: tuple[int, int, int]) -> np.ndarray:
        size = shape[0] * shape[1] * shape[2]
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.size < size:
            buf = self._local.buf = np.empty(size, _F)
        return buf[:size].reshape(shape)

    def __call__(
        self,
        first: np.ndarray,
        crops: np.ndarray,
        patch: int,
        logit_scale: float,
        temp_thd: float,
        iters: int,
        dilations: Sequence[int],
    ) -> np.ndarray:
        """``first_pass_labels_ref``'s result, crop by crop in the reused buffer."""
        b, q = first.shape[:2]
        h, w = crops.shape[-2:]
        gh, gw = h // patch, w // patch
        out = np.empty((b, gh, gw), np.int64)
        for i in range(b):
            buf = self._buffer((q, h, w))
            resize_bilinear(first[i], (h, w), out=buf)
            if iters > 0:
                pamr_in_place(crops[i], buf, iters, dilations)
            pred = softmax_labels(buf, logit_scale, temp_thd, rows=gh * patch)
            out[i] = patch_mode(pred[None], patch, q)[0]
        return out
