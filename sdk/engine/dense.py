"""``OrtBackend``: the ONNX Runtime dense backend of the pipeline core (``clipsam.pipeline``), numpy only.

A batch of crops through the exported graphs:

    host: pos_embed for the h/p x w/p grid (bicubic +0.1), Omega (NACLIP)            -- cached per grid
    no SFR:  clip_dense -> patch logits
    SFR:     clip_dense_trunk -> clip_dense_pass1 -> [host: ``sfr_feedback`` (upsample, PAMR, softmax, patch labels,
             S_hat), bias = float32(fp16(lambda * S_hat))] -> clip_dense_pass2 -> patch logits
    RF-CLIP: clip_dense_rfclip -> patch features, CLS embedding -> [host: ``RFClipHead`` (query clusters,
             image-adaptive text, global-semantics blend; the whole member's CLS from ``member_context``)] -> logits
    CorrCLIP: dino_features -> [host: regions at the DINO grid, merging, scope softmax, mask class token masks
              (``CorrClipHead``)] -> clip_dense_corrclip -> logits on the DINO grid (stride 8)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import DenseConfig
from ..errors import EngineLimitError
from ..ops.base import EncoderSpec, sfr_feedback
from ..ops.numpy_ops import NumpyOps
from ..ops.resize import interpolate_pos_embed, neighbourhood_window
from ..ops.sfr import LinspaceTable
from .corrclip import CorrClipHead
from .rfclip import GRAPH as RFCLIP_GRAPH
from .rfclip import RFClipHead


class OrtBackend:
    """``DenseBackend`` over the exported dense graphs.

    Arguments:
        sessions: graph name -> ``GraphSession`` (``clip_dense``, the three SFR graphs, ``clip_dense_rfclip``, or
            CorrCLIP's ``dino_features`` and ``clip_dense_corrclip``).
        cfg: the run's DenseConfig (graph-baked fields equal the export's).
        pos_embed: (1 + n*n, D) native positional embedding.
        spec: patch size, heads and width of the exported ViT.
        max_grid: largest patch-grid side served (``EngineLimitError`` beyond).
        table: torch.linspace tables for SFR's path check.
        dino_pos: CorrCLIP's (1 + n*n, Dd) native DINO positional embedding (None for the other methods).
    """

    def __init__(
        self,
        sessions: dict,
        cfg: DenseConfig,
        pos_embed: np.ndarray,
        spec: EncoderSpec,
        max_grid: int,
        table: LinspaceTable | None = None,
        dino_pos: np.ndarray | None = None,
    ):
        self.sessions = sessions
        self.cfg = cfg
        self.pos = np.asarray(pos_embed, dtype=np.float32)
        self.spec = spec
        self.max_grid = int(max_grid)
        self.ops = NumpyOps(table)
        self._grid_cache: dict = {}
        self.rfclip = RFClipHead(sessions[RFCLIP_GRAPH], cfg) if cfg.attention.base == "rfclip" else None
        self.corrclip = None
        if cfg.attention.base == "corrclip":
            if dino_pos is None:
                raise ValueError("OrtBackend: CorrCLIP needs dino_pos (host_constants.npz's dino_pos_embed)")
            self.corrclip = CorrClipHead(sessions, cfg, dino_pos)

    def inference(self):
        import contextlib

        return contextlib.nullcontext()

    def _grid_inputs(self, h: int, w: int) -> dict:
        p = self.spec.patch
        gh, gw = h // p, w // p
        if gh < 1 or gw < 1:
            raise EngineLimitError(f"a {h}x{w} window is smaller than one {p}x{p} patch")
        if max(gh, gw) > self.max_grid:
            raise EngineLimitError(
                f"a {h}x{w}-pixel window is a {gh}x{gw} patch grid, larger than the {self.max_grid} patches a side "
                f"these engines serve (max_side {self.max_grid * p}). Re-export with a larger --max-side, "
                "use a smaller short_side, or slide windows (slide_crop)."
            )
        if (gh, gw) not in self._grid_cache:
            feeds = {"pos_embed": interpolate_pos_embed(self.pos, gh, gw)}
            if self.cfg.attention.base == "naclip":
                feeds["window_bias"] = neighbourhood_window(gh, gw, self.cfg.feedback.gaussian_std)
            self._grid_cache[(gh, gw)] = feeds
        return self._grid_cache[(gh, gw)]

    def member_context(self, pixels: np.ndarray) -> dict | None:
        """RF-CLIP's whole-member CLS embedding {"global_embedding": (E,)} when its sliding windows take the image's
        global semantics, else None (the pipeline's ``Member.context``)."""
        if self.rfclip is None or not self.rfclip.uses_member_embedding():
            return None
        whole = np.ascontiguousarray(pixels[None], dtype=np.float32)
        grid = self._grid_inputs(*whole.shape[-2:])
        return {"global_embedding": self.rfclip.encode(whole, grid["pos_embed"])[1][0]}

    def patch_logits(
        self,
        crops: np.ndarray,
        text: np.ndarray,
        global_embedding: np.ndarray | None = None,
        regions: np.ndarray | None = None,
    ) -> np.ndarray:
        """(B, 3, H, W) normalised crops, (Q, C) unit text -> (B, Q, H // p, W // p) float32 logits
        (CorrCLIP: (B, Q, H // 8, W // 8)).

        ``global_embedding``: RF-CLIP's (B, E) whole-member CLS embeddings (``member_context``), or None.
        ``regions``: CorrCLIP's (B, H, W) region ids per pixel (-1 = padding; ``Member.maps``), or None.
        """
        att = self.cfg.attention
        b, _, h, w = crops.shape
        grid = self._grid_inputs(h, w)
        shape = (b, -1, h // self.spec.patch, w // self.spec.patch)
        if self.corrclip is not None:
            return self.corrclip.logits(crops, text, grid["pos_embed"], regions, self.spec.patch)
        if self.rfclip is not None:
            patches, cls = self.rfclip.encode(crops, grid["pos_embed"])
            return self.rfclip.logits(patches, cls, text, shape[2:], global_embedding)
        window = {k: grid[k] for k in ("window_bias",) if k in grid}
        if not att.sfr:
            feeds = {"crops": crops, "pos_embed": grid["pos_embed"], "text_embeddings": text, **window}
            return self.sessions["clip_dense"].run(feeds)["patch_logits"].reshape(shape)
        trunk = self.sessions["clip_dense_trunk"]  # with IO binding its outputs stay on the device for both passes
        feats = trunk.run({"crops": crops, "pos_embed": grid["pos_embed"]}, keep=("tokens", "rcs_q", "rcs_k"))
        common: dict[str, Any] = {**feats, **window, "text_embeddings": text}
        first = self.sessions["clip_dense_pass1"].run(common)["patch_logits"].reshape(shape)
        s_hat = sfr_feedback(self.ops, first, crops, self.spec.patch, self.cfg)
        common["sfr_bias"] = self.ops.sfr_term(s_hat, att.sfr_weights[1])
        return self.sessions["clip_dense_pass2"].run(common)["patch_logits"].reshape(shape)
