"""The compiled softmax over the queries: the reference's numbers bit for bit, ties and thresholds included."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.ops.softmax import query_softmax, softmax_labels
from clipsam.postprocess import query_probs


def _logits(q: int, h: int, w: int, seed: int) -> np.ndarray:
    """CLIP-like cosine logits with exact ties (repeated queries), near-ties (one float32 step apart) and a
    dominant query in a band of rows, so that argmax ties, both sides of a threshold and rows of every kind occur."""
    rng = np.random.default_rng(seed)
    x = (0.2 + 0.03 * rng.standard_normal((q, h, w))).astype(np.float32)
    if q >= 4:
        x[q - 1] = x[1]  # an exact tie: the first of the two wins
        x[q - 2] = np.nextafter(x[2], np.float32(1))  # a float32 step above another query
        x[q // 2, : h // 2] += np.float32(0.2)  # confident rows (of a query other than 0)
    return x


def _labels_ref(x: np.ndarray, scale: float, thd: float) -> np.ndarray:
    p = query_probs(x, scale)
    out = p.argmax(axis=0)
    out[p.max(axis=0) < np.float32(thd)] = 0
    return out


@pytest.mark.parametrize("q,h,w", [(1, 3, 5), (4, 7, 9), (21, 37, 61), (150, 9, 448), (500, 5, 33)])
@pytest.mark.parametrize("scale", [40.0, 65.0, 0.3])
def test_query_softmax_equals_the_reference(q, h, w, scale):
    x = _logits(q, h, w, q + h)
    x_before = x.copy()
    want = query_probs(x, scale)
    np.testing.assert_array_equal(query_softmax(x, scale), want)
    np.testing.assert_array_equal(x, x_before)
    inplace = x.copy()
    assert query_softmax(inplace, scale, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, want)


def test_query_softmax_takes_other_shapes_and_dtypes_through_the_reference():
    x = _logits(6, 4, 5, 1)
    np.testing.assert_array_equal(query_softmax(x[:, 0], 40.0), query_probs(x[:, 0], 40.0))
    np.testing.assert_array_equal(query_softmax(x.astype(np.float64), 40.0), query_probs(x.astype(np.float64), 40.0))
    with pytest.raises(ValueError, match="float32"):
        query_softmax(x, 40.0, out=np.empty((6, 4, 5), np.float64))


@pytest.mark.parametrize("q,h,w", [(1, 3, 5), (4, 7, 9), (21, 37, 61), (150, 9, 448), (500, 5, 33)])
@pytest.mark.parametrize("scale,thd", [(40.0, 0.5), (40.0, 0.0), (65.0, 0.1), (40.0, 1.0)])
def test_softmax_labels_equal_the_reference(q, h, w, scale, thd):
    x = _logits(q, h, w, 2 * q + w)
    want = _labels_ref(x, scale, thd)
    got = softmax_labels(x, scale, thd)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(softmax_labels(x, scale, thd, rows=h // 2), want[: h // 2])
    if q >= 4 and 0.0 < thd < 1.0:
        assert (want == 0).any() and (want != 0).any()  # both sides of the threshold


def test_softmax_labels_pick_the_first_of_tied_queries():
    x = np.zeros((5, 2, 3), np.float32)
    x[2] = x[4] = np.float32(1.0)  # two equal maxima: query 2
    x[:, 1] = np.float32(0.5)  # every query equal: query 0
    got = softmax_labels(x, 40.0, 0.0)
    np.testing.assert_array_equal(got, _labels_ref(x, 40.0, 0.0))
    assert got[0].tolist() == [2, 2, 2] and got[1].tolist() == [0, 0, 0]


@pytest.mark.parametrize("c,h,w", [(1, 3, 5), (5, 7, 9), (21, 37, 61), (150, 9, 448)])
def test_class_decision_equals_decide(c, h, w):
    from clipsam.ops.softmax import class_decision
    from clipsam.postprocess import decide

    probs = query_probs(_logits(c, h, w, c * w), 40.0)
    if c >= 5:
        probs[4] = probs[1]  # an exact tie between classes
    pmax = probs.max(axis=0)
    # 0, the median maximum, and a float64 just above a float32 maximum (numpy compares in float32: not below)
    for thd in (0.0, float(np.median(pmax)), float(pmax[0, 0]) + 1e-12, 1.0):
        want = decide(probs, thd)
        labels, scores = class_decision(probs, thd)
        np.testing.assert_array_equal(labels, want[0])
        np.testing.assert_array_equal(scores, want[1])
        assert labels.dtype == np.int32 and scores.dtype == np.float32
    if c >= 5:
        assert len(np.unique(decide(probs, float(np.median(pmax)))[0])) > 2


def test_nan_and_inf_take_numpys_decisions():
    """A NaN or an infinity among a pixel's logits or probabilities: numpy's argmax takes the first NaN; the compiled
    kernels hand those rows to numpy, so labels and scores are still the reference's (and never -1)."""
    from clipsam.ops.softmax import class_decision
    from clipsam.postprocess import decide

    x = _logits(6, 5, 7, 11)
    x[2, 1, 3] = np.nan
    x[4, 3, 0] = np.inf
    x[0, 4, 6] = -np.inf
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(query_softmax(x, 40.0), query_probs(x, 40.0))
        labels = softmax_labels(x, 40.0, 0.2)
        np.testing.assert_array_equal(labels, _labels_ref(x, 40.0, 0.2))
        probs = query_probs(_logits(6, 5, 7, 12), 40.0)
        probs[3, 2, 2] = np.nan
        got = class_decision(probs, 0.2)
        want = decide(probs, 0.2, with_probs=False)
    assert labels.min() >= 0 and got[0].min() >= 0
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("q", [3, 7, 40])
def test_decide_rows_with_many_queries_near_the_maximum(q):
    """``decide_rows`` on exponentials where most pixels have several queries in [0.99, 1] (quotients that round
    equal to the maximum's, exact ties at 1, a maximum below 1 and one of exactly 0.99): the first of the largest
    quotients, as numpy's argmax of e / sum_q e, and the same counts for each branch of the kernel."""
    from clipsam.ops.compiled_softmax import decide_rows

    rng = np.random.default_rng(q)
    h, w = 6, 37
    e = rng.uniform(0.0, 0.5, (q, h, w)).astype(np.float32)
    top = rng.integers(0, q, (h, w))
    np.put_along_axis(e, top[None], np.float32(1.0), axis=0)  # a softmax's maximum: exp(0) = 1
    near = (rng.random((q, h, w)) < 0.3) & (rng.random((1, h, w)) < 0.5)  # half of the pixels
    n = int(near.sum())
    k = np.where(rng.random(n) < 0.5, rng.integers(0, 4, n), rng.integers(0, 2000, n))
    e[near] = 1 - k.astype(np.float32) * np.float32(2**-24)  # 1 - k float32 steps below 1
    e[:, 0, :5] = np.float32(0.99)  # exactly at the candidate limit
    e[0, 0, :5] = np.float32(1.0)
    e[:, 1, :3] *= np.float32(0.7)  # a maximum other than 1 (not a softmax's): the checked path
    # a maximum of exactly 0.99 after a query one float32 step below it: the only query at the limit is not the label
    # where the two quotients round together
    e[:, 2] = rng.uniform(0.0, 0.5, (q, w)).astype(np.float32)
    e[0, 2], e[1, 2] = np.nextafter(np.float32(0.99), np.float32(0)), np.float32(0.99)
    acc = e[0].copy()
    for c in range(1, q):
        acc = acc + e[c]
    p = e / acc
    for thd in (0.0, float(np.median(p.max(axis=0))), 1.0):
        want = p.argmax(axis=0)
        want[p.max(axis=0) < np.float32(thd)] = 0
        out = np.full((h, w), -5, np.int64)
        decide_rows(e, 0, np.float32(thd), out, 0, h)
        np.testing.assert_array_equal(out, want)
    counts = (e >= np.float32(0.99)).sum(axis=0)
    assert (counts == 1).any() and (counts > 1).any()
    assert (p.argmax(axis=0) != e.argmax(axis=0)).any()  # quotients that round together exist
    assert (p.argmax(axis=0)[2] == 0).any()  # ... at a maximum of 0.99 too
