"""The interfaces between the pipeline core and a backend, and the SFR feedback step written once over them.

``DenseBackend`` encodes crops (PyTorch: ``clipsam.dense.backend.TorchBackend``; ONNX Runtime:
``clipsam.engine.dense.OrtBackend``); ``HostOps`` are the array operations on a backend's arrays.

A backend's arrays are numpy arrays (the ONNX Runtime backend, and every CPU path that shares
``clipsam.ops.numpy_ops``) or torch tensors (``clipsam.dense.ops``). The pipeline core (``clipsam.pipeline``) and
the SFR step below are written against ``HostOps`` only, so each line of orchestration exists once.

Post-processing (softmax, synonym merge, decision) runs on ``HostOps.post``: numpy on the CPU, torch on a GPU
(only labels, scores and, when asked, class probabilities cross to the host).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..config import DenseConfig

Array = Any  # numpy.ndarray or torch.Tensor, one kind per HostOps


class PostOps(Protocol):
    """Per-pixel post-processing of (Q or C, rows, W) arrays (``clipsam.postprocess`` defines the arithmetic)."""

    def query_probs(self, logits: Array, logit_scale: float) -> Array:
        """softmax(logit_scale * logits) over axis 0, float32."""

    def query_probs_fp16(self, logits: Array, logit_scale: float) -> Array:
        """``query_probs`` in upstream RF-CLIP's fp16 arithmetic (``clipsam.postprocess.query_probs_fp16``)."""

    def weighted_sum(self, xs: Iterable[Array], weights: Sequence[float]) -> Array:
        """sum_m w_m x_m, in order, in float32."""

    def merge_synonyms(self, probs: Array, query_to_class: Sequence[int], num_classes: int) -> Array:
        """(Q, ...) query probabilities -> (C, ...) class probabilities, max over each class's queries."""

    def argmax_counts(self, probs: Array, num_classes: int) -> np.ndarray:
        """(C,) int64 pixels per class of the argmax over axis 0."""

    def decide(
        self, probs: Array, prob_thd: float, keep: np.ndarray | None, with_probs: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Labels (int32), scores (float32) and, ``with_probs``, renormalised class probabilities, as numpy."""


class HostOps(Protocol):
    """Array operations of one backend (numpy or torch; one device)."""

    @property
    def post(self) -> PostOps:
        """The per-pixel post-processing operations this backend's arrays go to."""

    @property
    def strip_mb(self) -> float:
        """Working memory per post-processing strip that suits ``post``: a few MiB on the CPU, so that a strip's
        upsampled logits and probabilities stay in cache and are never fresh pages; hundreds on a GPU (fewer
        launches). Strips give the same numbers as the whole map (``clipsam.pipeline.finalize``)."""

    def from_numpy(self, x: np.ndarray) -> Array:
        """A float32 numpy array as this backend's array (on its device)."""

    def to_numpy(self, x: Array) -> np.ndarray:
        """This backend's array as a float32 numpy array on the host."""

    def to_post(self, x: Array) -> Array:
        """An array in the form ``post`` takes (numpy on the CPU)."""

    def zeros(self, shape: tuple[int, ...], like: Array) -> Array:
        """float32 zeros on ``like``'s device."""

    def stack(self, xs: Sequence[Array]) -> Array:
        """Stack along a new first axis."""

    def flip_w(self, x: Array) -> Array:
        """Mirror the last axis (a contiguous copy)."""

    def pad(self, x: Array, pads: tuple[int, int, int, int]) -> Array:
        """Zero-pad the last two axes by (left, right, top, bottom)."""

    def resize(
        self, x: Array, size: tuple[int, int], *, align_corners: bool = False, rows: tuple[int, int] | None = None
    ) -> Array:
        """Bilinear resize of the last two axes of (C, h, w) or (B, C, h, w); ``rows`` = output rows [r0, r1) only."""

    @property
    def resize_twice(self) -> Callable[..., Array] | None:
        """``f(x, mid, size, *, rows=None, flip=False)`` = ``resize(flip?(resize(x, mid)), size, rows=rows)`` with only
        the rows of the middle image that the output rows read, the same numbers; None where the backend has none
        (then two-step upsampling materialises the middle image; ``clipsam.pipeline.deferred``)."""

    @property
    def resize_add(self) -> Callable[..., Array] | None:
        """``f(x, size, dst, at, crop=None)``: ``dst[:, oy:oy + n, ox:ox + m] += resize(x, size)[:, top:top + n,
        left:left + m]`` in place, without the resized array, the same numbers (``crop`` = (top, left, n, m), default
        all; ``at`` = (oy, ox)); None where the backend has none (then sliding windows are resized whole and added;
        ``clipsam.pipeline.encode``)."""

    def pamr(
        self, image: Array, logits: Array, iters: int, dilations: Sequence[int], *, in_place: bool = False
    ) -> Array:
        """PAMR of (B, C, H', W') logits guided by the (B, 3, H, W) normalised image -> (B, C, H, W).
        ``in_place``: the caller gives up ``logits`` (already at the image's size), which may be refined in place
        instead of copied."""

    def first_pass_labels(
        self,
        first: Array,
        crops: Array,
        patch: int,
        logit_scale: float,
        temp_thd: float,
        iters: int,
        dilations: Sequence[int],
    ) -> Array:
        """SFR's first-pass patch labels: (B, Q, h, w) patch logits, (B, 3, H, W) crops -> (B, H // p, W // p) int64
        per-patch mode of the per-pixel argmax of softmax(logit_scale * PAMR(logits upsampled to H x W)), 0 where
        that maximum is below ``temp_thd`` (``clipsam.ops.first_pass``)."""

    def sfr_affinity(self, labels: Array, gaussian_std: float, path_check: str, blur: str) -> Array:
        """(B, h, w) patch labels -> S_hat (B, 1 + h*w, 1 + h*w) float16."""

    def sfr_term(self, s_hat: Array, lam: float) -> Array:
        """The second pass's SFR term lambda * S_hat, rounded to float16 as upstream computes it."""


@dataclass(frozen=True)
class EncoderSpec:
    """What planning and memory estimates need of a ViT: patch size, attention heads, token width."""

    patch: int
    heads: int
    width: int


class DenseBackend(Protocol):
    """Encodes batches of crops; the pipeline core does everything else with ``ops``.

    Attributes:
        spec: patch size, heads and width of the ViT.
        ops: the host operations on this backend's arrays.
    """

    @property
    def spec(self) -> EncoderSpec:
        """Patch size, heads and width of the ViT."""

    @property
    def ops(self) -> HostOps:
        """The host operations on this backend's arrays."""

    def inference(self) -> AbstractContextManager:
        """Context around a whole call (torch: inference mode)."""

    def patch_logits(self, crops: Array, text: Array) -> Array:
        """(B, 3, H, W) normalised crops, (Q, E) unit query embeddings -> (B, Q, H // p, W // p) float32 logits,
        ResCLIP's SFR included (``sfr_feedback`` between the passes)."""


def sfr_feedback(ops: HostOps, first: Array, crops: Array, patch: int, cfg: DenseConfig) -> Array:
    """ResCLIP's SFR step between the two passes of the last block.

    Arguments:
        ops: the backend's host operations.
        first: (B, Q, h, w) first-pass patch logits (float32).
        crops: (B, 3, H, W) the normalised crops.
        patch: patch size p (h = H // p).
        cfg: the run's settings (``feedback`` group, ``post.logit_scale``).

    Returns:
        S_hat (B, 1 + h*w, 1 + h*w) float16: softmax(logit_scale * PAMR(logits at crop size)) -> per-patch mode of
        the thresholded argmax -> class-consistency matrix (``clipsam.kernels.sfr_affinity``).
    """
    fb = cfg.feedback
    labels = ops.first_pass_labels(
        first, crops, patch, cfg.post.logit_scale, fb.temp_thd, fb.sfr_pamr_iters, fb.sfr_pamr_dilations
    )
    return ops.sfr_affinity(labels, fb.gaussian_std, fb.sfr_path_check, fb.sfr_blur)
