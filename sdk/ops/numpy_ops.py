"""``NumpyOps``: the host operations on numpy arrays (float32), torch-free.

The ONNX Runtime backend runs every host step with these. The resampling, PAMR and SFR functions follow the
arithmetic of the PyTorch CPU kernels they stand for (``clipsam.ops.resize``, ``clipsam.ops.pamr``,
``clipsam.ops.sfr``); post-processing is ``clipsam.postprocess``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from .. import postprocess
from .first_pass import FirstPass
from .pamr import pamr, pamr_in_place
from .resize import resize_bilinear
from .resize_fused import resize_bilinear_add, resize_bilinear_twice
from .sfr import LinspaceTable, sfr_affinity, sfr_term
from .softmax import class_decision, query_softmax

_F = np.float32
CPU_STRIP_MB = 4.0  # post-processing strips on the CPU: within L2/L3, heap-reused (HostOps.strip_mb)


class NumpyPost:
    """``PostOps`` in numpy (``clipsam.postprocess``)."""

    query_probs = staticmethod(query_softmax)  # postprocess.query_probs's numbers, compiled, on the host threads
    query_probs_fp16 = staticmethod(postprocess.query_probs_fp16)
    merge_synonyms = staticmethod(postprocess.merge_synonyms)
    argmax_counts = staticmethod(postprocess.argmax_counts)

    @staticmethod
    def weighted_sum(xs: Iterable[np.ndarray], weights: Sequence[float]) -> np.ndarray:
        return sum(_F(w) * x for x, w in zip(xs, weights))

    @staticmethod
    def decide(probs: np.ndarray, prob_thd: float, keep: np.ndarray | None, with_probs: bool):
        if with_probs or (keep is not None and not keep.all()) or probs.ndim != 3 or probs.dtype != _F:
            return postprocess.decide(probs, prob_thd, keep, with_probs)
        return (*class_decision(probs, prob_thd), None)  # the same labels and scores, compiled, on the host threads


class NumpyOps:
    """``HostOps`` on float32 numpy arrays.

    Arguments:
        table: torch.linspace(0, 1, D + 1) values for SFR's path check, by D (the engine folder stores the
            exporter's ``LinspaceTable``; the PyTorch backend passes torch's own).
    """

    post = NumpyPost()
    strip_mb = CPU_STRIP_MB

    def __init__(self, table: Callable[[int], np.ndarray] | None = None):
        self.table = table or LinspaceTable()
        self._first_pass = FirstPass()  # its reusable buffers belong to this object

    def from_numpy(self, x: np.ndarray) -> np.ndarray:
        return x

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return x

    def to_post(self, x: np.ndarray) -> np.ndarray:
        return x

    def zeros(self, shape: tuple[int, ...], like: np.ndarray) -> np.ndarray:
        return np.zeros(shape, _F)

    def stack(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack(xs)

    def flip_w(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x[..., ::-1])

    def pad(self, x: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
        left, right, top, bottom = pads
        return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)])

    def resize(
        self, x: np.ndarray, size: tuple[int, int], *, align_corners: bool = False, rows: tuple[int, int] | None = None
    ) -> np.ndarray:
        return resize_bilinear(x, size, align_corners=align_corners, rows=rows)

    def resize_twice(
        self,
        x: np.ndarray,
        mid: tuple[int, int],
        size: tuple[int, int],
        *,
        rows: tuple[int, int] | None = None,
        flip: bool = False,
    ) -> np.ndarray:
        return resize_bilinear_twice(x, mid, size, rows=rows, flip=flip)

    def resize_add(
        self,
        x: np.ndarray,
        size: tuple[int, int],
        dst: np.ndarray,
        at: tuple[int, int],
        crop: tuple[int, int, int, int] | None = None,
    ) -> np.ndarray:
        return resize_bilinear_add(x, size, dst, at, crop)

    def pamr(
        self, image: np.ndarray, logits: np.ndarray, iters: int, dilations: Sequence[int], *, in_place: bool = False
    ) -> np.ndarray:
        if in_place and logits.dtype == _F and logits.flags.c_contiguous and logits.shape[-2:] == image.shape[-2:]:
            for b in range(len(logits)):
                pamr_in_place(image[b], logits[b], iters, dilations)
            return logits
        return pamr(image, logits, iters, dilations)

    def first_pass_labels(
        self,
        first: np.ndarray,
        crops: np.ndarray,
        patch: int,
        logit_scale: float,
        temp_thd: float,
        iters: int,
        dilations: Sequence[int],
    ) -> np.ndarray:
        return self._first_pass(first, crops, patch, logit_scale, temp_thd, iters, dilations)

    def sfr_affinity(self, labels: np.ndarray, gaussian_std: float, path_check: str, blur: str) -> np.ndarray:
        return sfr_affinity(labels, gaussian_std, path_check, blur, self.table)

    def sfr_term(self, s_hat: np.ndarray, lam: float) -> np.ndarray:
        return sfr_term(s_hat, lam)
