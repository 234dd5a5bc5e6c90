"""RF-CLIP's dense graph (``clip_dense_rfclip``): crops to the patch features and CLS embedding its host head needs.

    crops (B,3,H,W), pos_embed (1+N, D)  --RFClipEncoder.encode-->  patch_features P (B, N, E), cls_embedding c (B, E)

The graph is ``clipsam.dense.rfclip.RFClipEncoder.encode`` itself, traced: the kk maps of every block, the denoising
after every block (its per-patch flags stay data-dependent: ``torch.where`` on the flag in the graph), the enhancement
and the value-only last block. Only the positional embedding differs from the PyTorch call: the encoder's own
bicubic resize is replaced by the graph input ``pos_embed`` (computed on the host by ``clipsam.ops.resize``, as for
every dense graph). The configuration's graph fields (sink channels, sigma, denoising alpha and identity, enhancement
beta, renormalisation) are baked in; ``clipsam.engine.manifest`` refuses a run that asks for others. The window head
(query clustering, image-adaptive text, global-semantics blend) runs on the host (``clipsam.ops.rfclip``,
``clipsam.engine.rfclip``).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from clipsam.dense.encoder import DenseEncoder

from .component import ParityCase


class HostPosEncoder(DenseEncoder):
    """A ``DenseEncoder`` whose positional embedding is the tensor in ``host_pos`` (the graph input being traced)."""

    host_pos: torch.Tensor | None = None

    def pos_embed(self, gh: int, gw: int, like: torch.Tensor) -> torch.Tensor:
        if self.host_pos is None:
            raise RuntimeError("HostPosEncoder.pos_embed called outside RFClipDenseGraph.forward")
        return self.host_pos.to(like.dtype)


class RFClipDenseGraph(nn.Module):
    """``clip_dense_rfclip``: (crops, pos_embed) -> (patch_features, cls_embedding) of an ``RFClipEncoder``."""

    def __init__(self, encoder):
        super().__init__()
        self.visual = encoder.visual  # registers the weights with the module
        self.enc = copy.copy(encoder)
        self.enc.base = HostPosEncoder(encoder.visual, encoder.cfg)

    def forward(self, crops: torch.Tensor, pos_embed: torch.Tensor):
        self.enc.base.host_pos = pos_embed
        try:
            patches, cls, _ = self.enc.encode(crops)
        finally:
            self.enc.base.host_pos = None
        return patches, cls


def rfclip_cases(encoder, sizes, seed: int = 0):
    """Example inputs (first size) and ``ParityCase``s (all sizes) for ``clip_dense_rfclip``.

    Arguments:
        encoder: ``RFClipEncoder``; its own ``encode`` (with its own positional-embedding resize) gives the expected
            outputs.
        sizes: [(batch, H, W), ...] crop batches; a batch of at least 2 first (the traced example).

    Returns:
        (example tuple of tensors, list of ParityCase)
    """
    gen = torch.Generator().manual_seed(seed)
    p = encoder.patch
    example, cases = None, []
    for b, h, w in sizes:
        crops = torch.randn(b, 3, h, w, generator=gen)
        crops[:, :, : h // 2] += 2.0  # a bright upper half: patches unlike the rest, for the denoising's flags
        pos = encoder.base.pos_embed(h // p, w // p, crops).detach()
        with torch.inference_mode():
            patches, cls, _ = encoder.encode(crops)
        if example is None:
            example = (crops.clone(), pos.clone())
        cases.append(
            ParityCase(
                f"batch {b}, {h}x{w} crop",
                {"crops": np.ascontiguousarray(crops.numpy()), "pos_embed": np.ascontiguousarray(pos.numpy())},
                {"patch_features": patches.numpy(), "cls_embedding": cls.numpy()},
            )
        )
    return example, cases
