"""numpy text-embedding arithmetic: ensembling, description averaging, ExCEL's TSE and the deterministic K-means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipsam.enrich import default_clusters, ensemble, kmeans, l2_normalize, mean_enrich, tse_enrich


def test_ensemble_is_normalise_mean_renormalise():
    raw = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)  # unit: (0.6, 0.8), (0, 1)
    m = np.array([0.3, 0.9])
    np.testing.assert_allclose(ensemble(raw), m / np.linalg.norm(m), atol=1e-7)
    assert np.allclose(l2_normalize(np.zeros((2, 3))), 0)  # no division by zero


def test_mean_enrichment_gives_the_class_one_vote_and_each_description_one():
    t = np.array([2.0, 0.0], dtype=np.float32)
    desc = np.array([[0.0, 5.0], [0.0, -1.0], [1.0, 1.0]], dtype=np.float32)
    s = 1 / math.sqrt(2)
    m = np.array([(1 + 0 + 0 + s) / 4, (0 + 1 - 1 + s) / 4])
    np.testing.assert_allclose(mean_enrich(t, desc), m / np.linalg.norm(m), atol=1e-6)


def test_tse_formula_on_a_hand_built_bank():
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)  # K = 3 centres
    t = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    # drop 0.34 -> int(0.34 * 3) = 1 lowest score of each class set to -inf, then a plain softmax (no temperature)
    out = tse_enrich(t, bank, drop=0.34)
    e = math.e
    w = (e / (e + 1), 1 / (e + 1))  # class 0: r = (1, 0, -1) -> softmax over (1, 0)
    v0 = np.array([1 + w[0], w[1]])
    # class 1: r = (0, 1, 0): the tie for the lowest goes to the first index (stable sort) -> keeps centres 1, 2
    v1 = np.array([-w[1], 1 + w[0]])
    np.testing.assert_allclose(out[0], v0 / np.linalg.norm(v0), atol=1e-6)
    np.testing.assert_allclose(out[1], v1 / np.linalg.norm(v1), atol=1e-6)
    # without dropping, all three centres get weight: r = (1, 0, -1)
    r = np.exp([1.0, 0.0, -1.0])
    r /= r.sum()
    v = r @ bank + t[0]
    np.testing.assert_allclose(tse_enrich(t, bank, drop=0.0)[0], v / np.linalg.norm(v), atol=1e-6)


def _blobs(seed=1):
    rng = np.random.RandomState(seed)
    centres = np.eye(8)[:3] * 5.0
    pts = np.concatenate([c + 0.05 * rng.randn(20, 8) for c in centres])
    return pts[rng.permutation(len(pts))], centres


def test_kmeans_is_deterministic_and_recovers_separated_clusters():
    x, true = _blobs()
    a, b = kmeans(x, 3), kmeans(x.copy(), 3)
    assert a.dtype == np.float32 and a.shape == (3, 8)
    assert np.array_equal(a, b)  # bit-identical on every call
    order = [int(np.argmin(np.linalg.norm(a - c, axis=1))) for c in true]
    assert sorted(order) == [0, 1, 2]  # one centre per blob
    np.testing.assert_allclose(a[order], true, atol=0.05)


def test_kmeans_edge_cases():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    c = kmeans(x, 3)  # more clusters than distinct points: still k centres, every point's centre present
    assert c.shape == (3, 2) and {tuple(r) for r in c} == {(1.0, 0.0), (0.0, 1.0)}
    with pytest.raises(ValueError, match="k-means"):
        kmeans(x, 4)


def test_default_bank_size_follows_excel():
    assert default_clusters("voc20", 20, 240) == 112
    assert default_clusters("coco80", 80, 800) == 224
    assert default_clusters(None, 10, 500) == 56  # round(5.6 * 10)
    assert default_clusters(None, 10, 30) == 30  # capped by the number of sentences
