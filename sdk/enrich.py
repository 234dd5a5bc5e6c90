"""Text-embedding arithmetic in numpy: ensembling, description averaging, ExCEL's TSE and a deterministic K-means.

Shared by the PyTorch pipeline and the torch-free ONNX engine runtime (both hand raw text embeddings to
``clipsam.prompting.build_text_embeddings``, which calls these). Every vector below is a row; E is the embedding
width (512 for ViT-B/16).

Text Semantic Enrichment (``docs/algorithms.md`` section 1; ExCEL ``attr_aggregate``), for a unit class embedding ``t`` (E,) and the
attribute bank ``A`` (K, E) (K-means centres of the L2-normalised description embeddings, not renormalised, as
sklearn's ``cluster_centers_``)::

    r = t A^T                                     (K,)
    r[the int(drop * K) smallest entries] = -inf
    r = softmax(r)                                no temperature: CLIP cosines are ~0.2-0.3, so r is near uniform
    t' = normalise(r A + t)

K-means (``kmeans``) is deterministic: k-means++ seeding drawn from ``numpy.random.RandomState(seed)`` (seed 0),
then at most ``iters`` (50) Lloyd iterations in float64, stopping early when no assignment changes; ties go to the
lowest centre index, and an empty cluster keeps its previous centre. ExCEL used sklearn's ``KMeans(random_state=0)``
(several k-means++ restarts): the centres differ from ExCEL's published bank, the method is the same.
"""

from __future__ import annotations

import numpy as np

TSE_CLUSTERS = {"voc20": 112, "coco80": 224}  # ExCEL's K for its VOC (20 classes) and COCO (80 classes) banks
_PER_CLASS = 5.6  # K per class for other description sets: 112 / 20


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x / ||x||`` along ``axis`` (float32; an all-zero vector stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, np.float32(1e-12))


def ensemble(embeddings: np.ndarray) -> np.ndarray:
    """(n, E) raw embeddings of one query's prompts -> (E,) unit vector: normalise each, mean, renormalise."""
    return l2_normalize(l2_normalize(embeddings).mean(axis=0))


def mean_enrich(t: np.ndarray, descriptions: np.ndarray) -> np.ndarray:
    """The plain alternative to TSE: ``normalise(mean([normalise(t), normalise(d_1), ..., normalise(d_n)]))``.

    Arguments:
        t: (E,) class embedding.
        descriptions: (n, E) description embeddings of that class (raw or unit).

    Returns:
        (E,) unit vector; t counts as one vote, each description as one.
    """
    rows = np.concatenate([l2_normalize(t)[None], l2_normalize(descriptions)], axis=0)
    return l2_normalize(rows.mean(axis=0))


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(n, E), (k, E) float64 -> (n, k) squared Euclidean distances (clipped at 0)."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def kmeans(x: np.ndarray, k: int, iters: int = 50, seed: int = 0) -> np.ndarray:
    """Deterministic K-means centres.

    Arguments:
        x: (n, E) points (description embeddings, already L2-normalised).
        k: number of clusters, 1 <= k <= n.
        iters: most Lloyd iterations.
        seed: seed of the k-means++ draws (``numpy.random.RandomState``).

    Returns:
        (k, E) float32 centres; the same input always gives the same centres.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= number of points, got k={k} for {n} points")
    rng = np.random.RandomState(seed)
    chosen = [int(rng.randint(n))]
    closest = _sq_dist(x, x[chosen])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: take the first unused index
            idx = next(i for i in range(n) if i not in chosen)
        else:
            idx = int(np.searchsorted(np.cumsum(closest), rng.random_sample() * total, side="right"))
            idx = min(idx, n - 1)
        chosen.append(idx)
        closest = np.minimum(closest, _sq_dist(x, x[idx : idx + 1])[:, 0])
    centres = x[chosen].copy()
    assign = None
    for _ in range(iters):
        new = _sq_dist(x, centres).argmin(axis=1)  # argmin: ties go to the lowest centre index
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = x[assign == j]
            if len(members):
                centres[j] = members.mean(axis=0)
    return centres.astype(np.float32)


def default_clusters(name: str | None, num_classes: int, num_sentences: int) -> int:
    """ExCEL's bank size: 112 for "voc20", 224 for "coco80", else round(5.6 * classes); at most the sentence count."""
    k = TSE_CLUSTERS.get(name or "", int(round(_PER_CLASS * num_classes)))
    return max(1, min(k, num_sentences))


def tse_enrich(t: np.ndarray, bank: np.ndarray, drop: float = 0.1) -> np.ndarray:
    """ExCEL's Text Semantic Enrichment of class embeddings (formula in the module docstring).

    Arguments:
        t: (C, E) unit class embeddings.
        bank: (K, E) attribute bank (K-means centres).
        drop: fraction of the K scores dropped per class (the lowest ``int(drop * K)``, set to -inf).

    Returns:
        (C, E) float32 unit enriched embeddings.
    """
    t = np.asarray(t, dtype=np.float32)
    bank = np.asarray(bank, dtype=np.float32)
    r = t @ bank.T  # (C, K)
    n_drop = int(drop * bank.shape[0])
    if n_drop:
        low = np.argsort(r, axis=1, kind="stable")[:, :n_drop]
        np.put_along_axis(r, low, -np.inf, axis=1)
    r = np.exp(r - r.max(axis=1, keepdims=True))
    r = r / r.sum(axis=1, keepdims=True)
    return l2_normalize(r @ bank + t)
