"""CorrCLIP on the ONNX Runtime backend: its two graphs and the region steps between them, numpy only.

    host: DINO positional embedding for the (H/8) x (W/8) grid (DINO's resize rule)          -- cached per grid
    dino_features: crops, dino_pos_embed -> unit q + k features F (B, Ld, Dd)
    host (``clipsam.ops.corrclip.window_inputs``), per window: regions at the DINO grid, merging, the scope
         softmax A = softmax(tau * F Fᵀ | scope), mask class token masks (CLS + own region) and each cell's region
    clip_dense_corrclip: crops, pos_embed, A, mct_allow, mct_index, text -> logits (B, Q, H/8 * W/8)

``docs/algorithms.md`` section 16 gives the arithmetic; the PyTorch backend is ``clipsam.dense.corrclip``. The masks
(given per call, SAM2 automatic masks on the SAM2 graphs, or none) and the mask vote are the front end's
(``clipsam.frontend``, ``clipsam.masks``), shared with the PyTorch Segmenter.
"""

from __future__ import annotations

import numpy as np

from ..config import DenseConfig
from ..ops.corrclip import window_inputs
from ..ops.resize import interpolate_pos_embed

DINO_GRAPH = "dino_features"
CLIP_GRAPH = "clip_dense_corrclip"
DINO_PATCH = 8


class CorrClipHead:
    """CorrCLIP's graphs and host steps (one per backend).

    Arguments:
        sessions: graph name -> ``GraphSession`` (``dino_features`` and ``clip_dense_corrclip``).
        cfg: the run's DenseConfig (its ``corrclip`` group's host fields are read here).
        dino_pos: (1 + n*n, Dd) DINO's native positional embedding (``host_constants.npz``).
    """

    def __init__(self, sessions: dict, cfg: DenseConfig, dino_pos: np.ndarray):
        self.dino = sessions[DINO_GRAPH]
        self.clip = sessions[CLIP_GRAPH]
        self.cfg = cfg
        self.dino_pos = np.asarray(dino_pos, dtype=np.float32)
        self._pos: dict = {}

    def dino_pos_embed(self, fh: int, fw: int) -> np.ndarray:
        """(1 + fh*fw, Dd) DINO positional embedding of a fh x fw grid (cached)."""
        if (fh, fw) not in self._pos:
            self._pos[(fh, fw)] = interpolate_pos_embed(self.dino_pos, fh, fw, native="grid")
        return self._pos[(fh, fw)]

    def features(self, crops: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) CLIP-normalised crops -> (B, Ld, Dd) unit DINO features."""
        fh, fw = crops.shape[-2] // DINO_PATCH, crops.shape[-1] // DINO_PATCH
        return self.dino.run({"crops": crops, "dino_pos_embed": self.dino_pos_embed(fh, fw)})["dino_features"]

    def logits(
        self, crops: np.ndarray, text: np.ndarray, pos_embed: np.ndarray, regions: np.ndarray | None, patch: int
    ) -> np.ndarray:
        """(B, Q, H/8, W/8) float32 logits of a batch of windows.

        Arguments:
            crops: (B, 3, H, W) normalised crops (H, W multiples of 8 and of the CLIP patch after padding).
            text: (Q, E) unit query embeddings.
            pos_embed: CLIP's (1 + N, D) positional embedding of the crops' patch grid.
            regions: (B, H, W) region ids (-1 = padding), or None (one unsegmented region).
            patch: CLIP's patch size.
        """
        b, _, h, w = crops.shape
        if regions is None:
            regions = np.zeros((b, h, w), np.float32)
        dgrid, grid = (h // DINO_PATCH, w // DINO_PATCH), (h // patch, w // patch)
        feats = self.features(crops)
        extra = window_inputs(feats, np.asarray(regions), dgrid, grid, self.cfg.corrclip)
        feeds = {"crops": crops, "pos_embed": pos_embed, **extra, "text_embeddings": text}
        return self.clip.run(feeds)["patch_logits"].reshape(b, -1, *dgrid)
