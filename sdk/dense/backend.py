"""``TorchBackend``: the PyTorch dense backend of the pipeline core (``clipsam.pipeline``).

It encodes batches of crops with the method's encoder under inference mode and the requested autocast, and gives the
core ``TorchOps`` on the model's device.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from ..device import UPSTREAM_FP16
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
        precision: "fp32", or "fp16"/"bf16" CUDA autocast around the encoder, or "fp16-upstream" (no autocast: the
            encoder's models are fp16 copies, ``clipsam.dense.upstream_fp16``; window logits are rounded to fp16
            after their upsampling, as upstream upsamples its fp16 logits in fp16 before summing them in float32).
        cpu_ops: "compiled" or "torch" host operations on the CPU (``clipsam.dense.ops.TorchOps``).
    """

    def __init__(self, encoder: Encoder, device: torch.device, precision: str = "fp32", cpu_ops: str = "compiled"):
        self.encoder = encoder
        self.ops = TorchOps(device, cpu_ops=cpu_ops)
        self.precision = precision
        # "fp16-upstream": window logits upsampled in fp16; with RF-CLIP's whole-image presets also the final
        # upsampling (``fp16_final``), and with those or PAMR the softmax in fp16 (``fp16_tail``; ``RFClipEncoder``)
        self.fp16_windows = precision == UPSTREAM_FP16
        self.fp16_final = self.fp16_windows and bool(getattr(encoder, "fp16_final", False))
        self.fp16_tail = self.fp16_windows and bool(getattr(encoder, "fp16_tail", False))
        v = encoder.visual
        self.spec = EncoderSpec(encoder.patch, encoder.heads, int(v.conv1.out_channels))

    def inference(self):
        """The context of a whole call (inference mode)."""
        return torch.inference_mode()

    def _autocast(self):
        dtype = _AUTOCAST.get(self.precision)
        return contextlib.nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)

    def resize_window_logits(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Patch logits (B, Q, h, w) float32 upsampled to the window ``size``: the host ops' bilinear resize, or for
        "fp16-upstream" torch's bilinear on the fp16 logits, as upstream (its fp16 kernel rounds differently from a
        float32 resize rounded to fp16)."""
        if not self.fp16_windows:
            return self.ops.resize(logits, size)
        return F.interpolate(logits.half(), size=size, mode="bilinear", align_corners=False).float()

    def resize_final_logits(
        self, logits: torch.Tensor, size: tuple[int, int], rows: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Member logits ((1,) Q, h, w) float32 upsampled to the original ``size`` (output ``rows`` only): the host
        ops' resize, or torch's fp16 bilinear where upstream's logits are still fp16 there (``fp16_final``)."""
        if not self.fp16_final:
            return self.ops.resize(logits, size, rows=rows)
        x = logits if logits.dim() == 4 else logits[None]
        y = F.interpolate(x.half(), size=size, mode="bilinear", align_corners=False).float()
        y = y if logits.dim() == 4 else y[0]
        return y if rows is None else y[..., rows[0] : rows[1], :]

    def round_final_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits at the original size (after PAMR), float32: rounded to fp16 where upstream keeps them in fp16 up
        to the softmax (``fp16_tail``), else unchanged."""
        return logits.half().float() if self.fp16_tail else logits

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
