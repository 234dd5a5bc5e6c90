"""RF-CLIP's host-side text steps in numpy (torch-free): query clustering, image-adaptive text, window logits.

``docs/algorithms.md`` section 15 gives the arithmetic. The clustering runs once per vocabulary; the text adjustment
and the global-semantics blend run per window on the encoder's outputs (the patch features ``P`` and the CLS
embedding ``c``). The PyTorch backend runs the same per-window steps on the device (``clipsam.dense.rfclip``);
``tests/dense/test_rfclip.py`` checks that both agree with an independent implementation.
"""

from __future__ import annotations

import numpy as np


def cosine_distances(text: np.ndarray) -> np.ndarray:
    """(Q, E) -> (Q, Q) cosine distances as upstream gets them from scikit-learn: rows divided by their norms (in
    float32 for float32 input, else float64), ``1 - X Xᵀ`` clipped to [0, 2], zero diagonal; the upper triangle is
    used for both halves (what scipy's ``squareform`` reads)."""
    x = np.asarray(text)
    x = x.astype(np.float32 if x.dtype == np.float32 else np.float64, copy=True)
    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    d = np.clip(1.0 - x @ x.T, 0.0, 2.0)
    upper = np.triu(d, 1)
    return (upper + upper.T).astype(np.float64)


def cluster_queries(text: np.ndarray, threshold: float) -> list[list[int]]:
    """Complete-linkage clusters of the queries, cut at ``threshold`` (scipy ``linkage(method='complete')`` then
    ``fcluster(t, criterion='distance')``): repeatedly merge the two clusters whose largest pairwise distance is
    smallest, while it is <= threshold.

    Arguments:
        text: (Q, E) query embeddings.
        threshold: the cut height (RF-CLIP's ``h_threshold``).

    Returns:
        clusters as sorted lists of query indices, ordered by their smallest index. Exactly equal merge heights are
        taken in row-major order of the cluster pair (scipy's order may differ; only exact ties can tell).
    """
    d = cosine_distances(text)
    q = d.shape[0]
    np.fill_diagonal(d, np.inf)
    members: dict[int, list[int]] = {i: [i] for i in range(q)}
    while len(members) > 1:
        flat = int(np.argmin(d))
        a, b = divmod(flat, q)
        if d[a, b] > threshold:
            break
        a, b = min(a, b), max(a, b)
        row = np.maximum(d[a], d[b])  # complete linkage: the farthest pair
        d[a], d[:, a] = row, row
        d[a, a] = np.inf
        d[b], d[:, b] = np.inf, np.inf
        members[a] = sorted(members[a] + members.pop(b))
    return [members[k] for k in sorted(members)]


def cluster_table(clusters: list[list[int]]) -> np.ndarray:
    """(K, M) int64 table of the clusters' query indices, ascending, padded with -1 (M = largest cluster)."""
    m = max(len(c) for c in clusters)
    table = np.full((len(clusters), m), -1, np.int64)
    for i, c in enumerate(clusters):
        table[i, : len(c)] = sorted(c)
    return table


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def adapt_text(
    patches: np.ndarray, text: np.ndarray, sims: np.ndarray, table: np.ndarray, alpha: float, topk: int
) -> np.ndarray:
    """Image-adaptive text: in every cluster, the query most similar to the global embedding moves towards the
    mean of the patches most similar to it.

    Arguments:
        patches: (B, N, E) patch features, L2-normalised once.
        text: (Q, E) query embeddings.
        sims: (B, Q) global similarities g.
        table: (K, M) clusters (``cluster_table``).
        alpha: weight of the patch mean (``rf_text_alpha``).
        topk: patches averaged (2 upstream; at most N).

    Returns:
        (B, Q, E) adjusted query embeddings (rows of unchosen queries unchanged).
    """
    b, n, _ = patches.shape
    valid = table >= 0
    g = np.where(valid[None], sims[:, np.maximum(table, 0)], -np.inf)  # (B, K, M)
    chosen = np.take_along_axis(np.broadcast_to(table, g.shape), g.argmax(-1)[..., None], -1)[..., 0]  # (B, K)
    t = _normalize(text[chosen])  # (B, K, E)
    sim = np.einsum("bne,bke->bnk", _normalize(patches), t)
    k = min(topk, n)
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]  # (B, k, K): the k most similar patches per query
    mv = _normalize(np.stack([patches[i][top[i]].mean(0) for i in range(b)]))  # (B, K, E)
    out = np.repeat(text[None], b, axis=0).astype(np.float32)
    new = _normalize((1 - alpha) * t + alpha * mv)
    np.put_along_axis(out, chosen[..., None], new, axis=1)
    return out


def rf_window_logits(
    patches: np.ndarray,
    cls: np.ndarray,
    text: np.ndarray,
    table: np.ndarray,
    alpha: float,
    gamma: float,
    topk: int,
    grid: tuple[int, int],
) -> np.ndarray:
    """Logits of a batch of windows from the encoder's outputs.

    Arguments:
        patches: (B, N, E) patch features (not yet normalised).
        cls: (B, E) CLS embeddings giving the global similarities (the window's own, or the whole image's).
        text: (Q, E) unit query embeddings.
        table: (K, M) query clusters.
        alpha, gamma, topk: ``rf_text_alpha``, ``rf_global_weight``, ``rf_topk``.
        grid: (h, w) patch grid, N = h * w.

    Returns:
        (B, Q, h, w) float32 logits ``(1 - gamma) P T'ᵀ + gamma g``.
    """
    p = patches / np.linalg.norm(patches, axis=-1, keepdims=True)
    g = (cls / np.linalg.norm(cls, axis=-1, keepdims=True)) @ text.T  # (B, Q)
    adjusted = adapt_text(p, text, g, table, alpha, topk)
    logits = np.einsum("bne,bqe->bnq", p, adjusted)
    logits = logits * (1 - gamma) + g[:, None] * gamma
    return np.ascontiguousarray(logits.transpose(0, 2, 1).reshape(p.shape[0], -1, *grid), dtype=np.float32)
