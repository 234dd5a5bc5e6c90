"""``TorchBackend``: the PyTorch dense backend of the pipeline core (``clipsam.pipeline``).

It encodes batches of crops with the method's encoder under inference mode and the requested autocast, and gives the
core ``TorchOps`` on the model's device.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import torch

from ..ops.base import EncoderSpec
from .ops import TorchOps

_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Encoder(Protocol):
    """What ``TorchBackend`` needs of an encoder (``DenseEncoder``, ``RFClipEncoder``, ``CorrClipEncoder``)."""

    @property
    def visual(self) -> Any: ...  # open_clip's VisionTransformer

    @property
    def patch(self) -> int: ...

    @property
    def heads(self) -> int: ...

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor: ...  # (crops, text, ops, **extras) -> logits


class TorchBackend:
    """``DenseBackend`` over a dense encoder (``Encoder``).

    Arguments:
        encoder: the dense encoder (its config fixes the method).
        device: the model's device.
        precision: "fp32", or "fp16"/"bf16" CUDA autocast around the encoder.
        cpu_ops: "compiled" or "torch" host operations on the CPU (``clipsam.dense.ops.TorchOps``).
    """

    def __init__(self, encoder: Encoder, device: torch.device, precision: str = "fp32", cpu_ops: str = "compiled"):
        self.encoder = encoder
        self.ops = TorchOps(device, cpu_ops=cpu_ops)
        self.precision = precision
        v = encoder.visual
        self.spec = EncoderSpec(encoder.patch, encoder.heads, int(v.conv1.out_channels))

    def inference(self):
        """The context of a whole call (inference mode)."""
        return torch.inference_mode()

    def _autocast(self):
        dtype = _AUTOCAST.get(self.precision)
        return contextlib.nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)

    def patch_logits(self, crops: torch.Tensor, text: torch.Tensor, **extras) -> torch.Tensor:
        """(B, 3, H, W) normalised crops, (Q, E) unit text -> (B, Q, H // p, W // p) float32 logits.

        ``extras``: the method's per-window inputs (``clipsam.pipeline.plan.Member``), passed to the encoder.
        """
        with torch.inference_mode(), self._autocast():
            return self.encoder(crops, text, self.ops, **extras).float()

    def member_context(self, pixels: torch.Tensor) -> dict | None:
        """The encoder's per-member inputs (RF-CLIP's whole-image CLS embedding), or None."""
        make = getattr(self.encoder, "member_context", None)
        if make is None:
            return None
        with torch.inference_mode(), self._autocast():
            return make(pixels)
