"""CorrCLIP's region-dependent host steps in numpy (torch-free), between its two exported graphs.

Per window, from the ``dino_features`` graph's unit DINO features ``F`` (Ld, Dd) and the window's region ids at pixel
resolution (``docs/algorithms.md`` section 16.4, steps 2-4 and 6; the PyTorch encoder is
``clipsam.dense.corrclip``):

    R      = region ids at the DINO grid (PyTorch's legacy nearest rule; the padding is region PAD_ID)
    R      = ``merge_regions``: regions whose mean features chain within eps share MERGED_ID + component
    A      = ``scope_attention``: softmax(tau * F Fᵀ) over the pairs the scope allows          (Ld, Ld)
    allow  = per region at the CLIP grid, CLS and that region's patches                      (NR, 1 + T) bool
    index  = per DINO cell, its CLIP-grid region (nearest upsampling)                        (Ld,) int64

``window_inputs`` stacks them for a batch of windows (NR padded to the batch's largest with rows that see only CLS:
no cell points at them); ``clip_dense_corrclip`` takes them as inputs.
"""

from __future__ import annotations

import numpy as np

from ..masks import resize_nearest, unsegmented_id

PAD_ID = 1 << 20  # region id of padded pixels (the pipeline pads region maps with -1); above every real id
MERGED_ID = 1 << 21  # merged regions get MERGED_ID + component (upstream: 10000 + DBSCAN label)


def region_ids(regions: np.ndarray) -> np.ndarray:
    """(..., h, w) float region maps (-1 = padding) -> int64 ids, the padding as ``PAD_ID`` (the encoder's rule)."""
    ids = np.rint(np.asarray(regions)).astype(np.int64)
    return np.where(ids < 0, PAD_ID, ids)


def components(close: np.ndarray) -> list[int]:
    """Connected components of the graph whose edges are ``close`` (n, n) bool, labelled 0, 1, ... in order of
    their first member (DBSCAN with min_samples=1 on a precomputed distance)."""
    n = close.shape[0]
    labels = [-1] * n
    nxt = 0
    for start in range(n):
        if labels[start] >= 0:
            continue
        labels[start], stack = nxt, [start]
        while stack:
            a = stack.pop()
            for b in np.flatnonzero(close[a]):
                if labels[b] < 0:
                    labels[b] = nxt
                    stack.append(int(b))
        nxt += 1
    return labels


def merge_regions(ids: np.ndarray, feats: np.ndarray, eps: float, distance: str, rule: str) -> np.ndarray:
    """Regions whose mean DINO features chain within ``eps`` get one id (single linkage).

    Arguments:
        ids: (Ld,) int64 region ids at the DINO grid.
        feats: (Ld, D) float32 unit DINO features.
        distance: "max_minus" (max(G) - G over the cosine matrix G, upstream) or "one_minus" (1 - G).
        rule: the unsegmented rule (``clipsam.masks.unsegmented_id``); that region takes no part. With two ids or
            fewer nothing merges.

    Returns:
        (Ld,) ids: the unsegmented region keeps its id, the others get MERGED_ID + component.
    """
    vals = np.unique(ids)
    if len(vals) <= 2:
        return ids
    skip = unsegmented_id(ids, rule)
    first = 1 if skip is not None and int(vals[0]) == skip else 0
    means = np.stack([feats[ids == v].mean(0) for v in vals]).astype(np.float32)
    norms = np.maximum(np.sqrt((means * means).sum(-1, keepdims=True)), np.float32(1e-12))
    g = (means / norms)[first:]
    sim = g @ g.T
    dist = (sim.max() if distance == "max_minus" else np.float32(1.0)) - sim
    out = ids.copy()
    for v, lab in zip(vals[first:], components(dist <= np.float32(eps))):
        out[ids == v] = MERGED_ID + lab
    return out


def scope_attention(sim: np.ndarray, ids: np.ndarray, tau: float, rule: str) -> np.ndarray:
    """(Ld, Ld) float32 value attention: softmax over keys of tau * S where allowed: the same region (not the
    unsegmented one), or any pair touching the unsegmented region whose similarity exceeds the mean of S."""
    zero = unsegmented_id(ids, rule)
    same = ids[:, None] == ids[None, :]
    if zero is None:
        allowed = same
    else:
        z = ids == zero
        allowed = (same & ~z[:, None]) | ((z[:, None] | z[None, :]) & (sim > sim.mean(dtype=np.float32)))
    logits = np.where(allowed, np.float32(tau) * sim, np.float32(-np.inf)).astype(np.float32)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def window_regions(feats: np.ndarray, ids: np.ndarray, dgrid, grid, corr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The region-dependent inputs of one window.

    Arguments:
        feats: (Ld, Dd) unit DINO features; ids: (h, w) int64 region ids (``region_ids``).
        dgrid: DINO grid (fh, fw); grid: CLIP grid (th, tw).
        corr: the ``CorrClipConfig`` (host fields: merge eps and distance, unsegmented rule, scope tau).

    Returns:
        A (Ld, Ld) float32, allow (NR, 1 + T) bool, index (Ld,) int64 (``docs/algorithms.md`` section 16.4).
    """
    fh, fw = dgrid
    r = merge_regions(
        resize_nearest(ids, dgrid).reshape(-1),
        feats,
        corr.corr_merge_eps,
        corr.corr_merge_distance,
        corr.corr_unsegmented,
    )
    a = scope_attention(feats @ feats.T, r, corr.corr_scope_tau, corr.corr_unsegmented)
    rt = resize_nearest(r.reshape(fh, fw), grid).reshape(-1)
    tids = np.unique(rt)
    allow = np.concatenate([np.ones((len(tids), 1), bool), rt[None] == tids[:, None]], axis=1)
    index = np.searchsorted(tids, resize_nearest(rt.reshape(grid), dgrid).reshape(-1)).astype(np.int64)
    return a, allow, index


def window_inputs(feats: np.ndarray, regions: np.ndarray, dgrid, grid, corr) -> dict:
    """``clip_dense_corrclip``'s region inputs of a batch of windows.

    Arguments:
        feats: (B, Ld, Dd) unit DINO features; regions: (B, h, w) float region maps (-1 = padding).

    Returns:
        {"scope_attention": (B, Ld, Ld) float32, "mct_allow": (B, NR, 1 + T) bool, "mct_index": (B, Ld) int64}.
    """
    ids = region_ids(regions)
    parts = [window_regions(f, i, dgrid, grid, corr) for f, i in zip(feats, ids)]
    nr = max(p[1].shape[0] for p in parts)
    allow = np.zeros((len(parts), nr, parts[0][1].shape[1]), bool)
    allow[:, :, 0] = True  # padding rows see CLS only (no cell takes them)
    for b, p in enumerate(parts):
        allow[b, : len(p[1])] = p[1]
    return {
        "scope_attention": np.stack([p[0] for p in parts]),
        "mct_allow": allow,
        "mct_index": np.stack([p[2] for p in parts]),
    }
