"""RF-CLIP's host side on the ONNX Runtime backend: the window head after the ``clip_dense_rfclip`` graph, numpy only.

    clip_dense_rfclip: crops, pos_embed -> patch_features P (B, N, E), cls_embedding c (B, E)
    host (``clipsam.ops.rfclip``):
      clusters of the queries (complete linkage at rf_cluster_threshold)      -- once per vocabulary (cached)
      c <- the whole member's CLS embedding when sliding windows take the image's global semantics
           (rf_global_source="image"; one graph run per member and scale, ``member_context``)
      logits = (1 - gamma) P T'ᵀ + gamma g with the image-adaptive text T' per window  -> (B, Q, h, w)

``docs/algorithms.md`` section 15 gives the arithmetic; the PyTorch backend runs the same head on the device
(``clipsam.dense.rfclip``). RF-CLIP's optional PAMR is the pipeline's output PAMR on the host ops (``NumpyOps``).
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..config import DenseConfig
from ..ops.rfclip import cluster_queries, cluster_table, rf_window_logits

GRAPH = "clip_dense_rfclip"
_MAX_TABLES = 16


class RFClipHead:
    """The host steps of RF-CLIP around its graph (one per backend; the cluster tables are cached per text).

    Arguments:
        session: the ``clip_dense_rfclip`` ``GraphSession``.
        cfg: the run's DenseConfig (its ``rfclip`` group's host fields are read here).
    """

    def __init__(self, session, cfg: DenseConfig):
        self.session = session
        self.cfg = cfg
        self._tables: dict = {}

    def encode(self, crops: np.ndarray, pos_embed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3, H, W) crops and their grid's (1 + N, D) positional embedding -> P (B, N, E), c (B, E)."""
        out = self.session.run({"crops": crops, "pos_embed": pos_embed})
        return out["patch_features"], out["cls_embedding"]

    def cluster_table(self, text: np.ndarray) -> np.ndarray:
        """(K, M) cluster table of the (Q, E) query embeddings at ``rf_cluster_threshold`` (cached per text)."""
        arr = np.ascontiguousarray(text, dtype=np.float32)
        t = self.cfg.rfclip.rf_cluster_threshold
        key = (hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest(), arr.shape, t)
        table = self._tables.get(key)
        if table is None:
            if len(self._tables) >= _MAX_TABLES:
                self._tables.clear()
            table = cluster_table(cluster_queries(arr, t))
            self._tables[key] = table
        return table

    def uses_member_embedding(self) -> bool:
        """Whether windows take their whole member's CLS embedding (sliding windows, ``rf_global_source="image"``)."""
        return self.cfg.schedule.slide_crop > 0 and self.cfg.rfclip.rf_global_source == "image"

    def logits(
        self,
        patches: np.ndarray,
        cls: np.ndarray,
        text: np.ndarray,
        grid: tuple[int, int],
        global_embedding: np.ndarray | None = None,
    ) -> np.ndarray:
        """(B, Q, h, w) float32 logits of a batch of windows from the graph's outputs.

        Arguments:
            patches: (B, N, E) patch features; cls: (B, E) the windows' own CLS embeddings.
            text: (Q, E) unit query embeddings.
            grid: (h, w), N = h * w.
            global_embedding: (B, E) CLS embeddings of the windows' whole members, or None (each window's own).
        """
        rf = self.cfg.rfclip
        c = cls if global_embedding is None else np.asarray(global_embedding, dtype=np.float32)
        t = np.asarray(text, dtype=np.float32)
        table = self.cluster_table(t)
        return rf_window_logits(patches, c, t, table, rf.rf_text_alpha, rf.rf_global_weight, rf.rf_topk, grid)
