"""Softmax over queries, synonym max-merge, prob_thd and SCLIP's area_thd, on hand-built logits."""

from __future__ import annotations

import numpy as np

from clipsam.postprocess import merge_synonyms, postprocess


def test_synonyms_compete_in_the_softmax_then_max_merge():
    # 3 queries: class 0 has synonyms q0, q1; class 1 is q2. One pixel.
    logits = np.array([1.0, 1.0, 1.5], np.float32).reshape(3, 1, 1)
    labels, scores, probs = postprocess(logits, [0, 0, 1], 2, logit_scale=1.0)
    e = np.exp([1.0, 1.0, 1.5])
    p = e / e.sum()  # synonyms split the mass: q2 wins although class 0 has more in total
    assert labels[0, 0] == 1
    merged = np.array([max(p[0], p[1]), p[2]])
    np.testing.assert_allclose(probs[:, 0, 0], merged / merged.sum(), rtol=1e-6)
    np.testing.assert_allclose(scores[0, 0], p[2] / merged.sum(), rtol=1e-6)


def test_merge_synonyms_identity_without_synonyms():
    p = np.random.rand(3, 2, 2).astype(np.float32)
    assert merge_synonyms(p, [0, 1, 2], 3) is p


def test_prob_thd_sends_uncertain_pixels_to_class_zero():
    logits = np.zeros((3, 1, 2), np.float32)
    logits[2, 0, 0] = 5.0  # confident class 2
    logits[1, 0, 1] = 0.1  # nearly uniform: max prob ~0.35
    labels, _, _ = postprocess(logits, [0, 1, 2], 3, logit_scale=1.0, prob_thd=0.5)
    assert labels.tolist() == [[2, 0]]
    labels, _, _ = postprocess(logits, [0, 1, 2], 3, logit_scale=1.0, prob_thd=0.0)
    assert labels.tolist() == [[2, 1]]


def test_area_thd_drops_small_foreground_classes_to_next_best():
    # 10 pixels: class 1 wins 9, class 2 wins 1 (second choice there: class 1). fg = 10, 0.1 * 10 = 1 -> count 1 <= 1 dropped
    logits = np.zeros((3, 1, 10), np.float32)
    logits[1, 0, :9] = 4.0
    logits[2, 0, 9] = 4.0
    logits[1, 0, 9] = 3.0
    labels, _, probs = postprocess(logits, [0, 1, 2], 3, logit_scale=1.0, area_thd=0.1)
    assert labels.tolist() == [[1] * 10]
    assert probs[2].max() == 0.0
    labels, _, _ = postprocess(logits, [0, 1, 2], 3, logit_scale=1.0, area_thd=None)
    assert labels[0, 9] == 2
    # background pixels are not counted in the foreground total and class 0 is never dropped
    logits2 = np.zeros((3, 1, 10), np.float32)
    logits2[0, 0, :8] = 4.0
    logits2[1, 0, 8:] = 4.0
    labels, _, _ = postprocess(logits2, [0, 1, 2], 3, logit_scale=1.0, area_thd=0.1)
    assert labels.tolist() == [[0] * 8 + [1, 1]]


def test_query_probs_fp16_is_torchs_fp16_softmax():
    """RF-CLIP's fp16 tail (``precision="fp16-upstream"``): logits rounded to fp16, times the scale in fp16, softmax
    rounded to fp16. numpy (the CPU's post ops) and torch (``TorchPost``) against ``torch.softmax`` on fp16."""
    import torch

    from clipsam.dense.ops import TorchPost
    from clipsam.postprocess import query_probs, query_probs_fp16

    rng = np.random.RandomState(0)
    logits = (rng.randn(12, 40, 50) * 0.05).astype(np.float32)
    ref = torch.softmax(torch.from_numpy(logits).half() * 40.0, dim=0).float().numpy()
    ours = query_probs_fp16(logits, 40.0)
    dev = TorchPost.query_probs_fp16(torch.from_numpy(logits), 40.0).numpy()
    assert ours.dtype == np.float32 and np.array_equal(ours.astype(np.float16).astype(np.float32), ours)  # fp16 values
    np.testing.assert_array_equal(dev, ref)
    np.testing.assert_allclose(ours, ref, atol=2.5e-4, rtol=0)  # one fp16 ulp of a probability <= 0.5 at most
    assert (ours == ref).mean() > 0.99
    assert np.abs(ours - query_probs(logits, 40.0)).max() > 1e-5  # not the float32 softmax


def test_decide_without_probs_gives_the_same_labels_and_scores():
    """Only the labels' probabilities are renormalised when the full array is not asked for: the same numbers."""
    from clipsam.postprocess import decide, query_probs

    rng = np.random.default_rng(7)
    probs = query_probs((0.2 + 0.05 * rng.standard_normal((12, 30, 41))).astype(np.float32), 40.0)
    keep = np.ones(12, bool)
    keep[[3, 5]] = False
    for k in (None, keep):
        for thd in (0.0, float(np.median(probs.max(0)))):
            labels, scores, normed = decide(probs, thd, k)
            got = decide(probs, thd, k, with_probs=False)
            np.testing.assert_array_equal(got[0], labels)
            np.testing.assert_array_equal(got[1], scores)
            assert got[2] is None and normed.shape == probs.shape
            assert got[1].dtype == np.float32 and len(np.unique(labels)) > 2


def test_finish_strips_keeps_the_first_pass_where_the_image_fits():
    """SCLIP's area rule counts the argmax over the whole image before deciding: the strips are computed once when
    the whole image's class probabilities fit ``keep_mb`` (kept between the passes), twice otherwise; the same
    labels, scores and probabilities either way, equal to ``postprocess`` on the whole map."""
    from clipsam.postprocess import argmax_counts, decide, finish_strips, query_probs

    rng = np.random.default_rng(3)
    c, h, w = 4, 13, 9
    logits = rng.normal(0.0, 1.0, (c, h, w)).astype(np.float32)
    logits[1] -= 5.0  # class 1 wins a few pixels only: the area rule drops it
    logits[1, 12, 6:] += 12.0
    probs = query_probs(logits, 2.0)
    calls = []

    def strips():
        calls.append(1)
        for r0 in range(0, h, 5):
            yield r0, min(h, r0 + 5), probs[:, r0 : r0 + 5].copy()

    want = postprocess(logits, [0, 1, 2, 3], c, logit_scale=2.0, prob_thd=0.3, area_thd=0.1)
    assert not np.array_equal(want[0], postprocess(logits, [0, 1, 2, 3], c, logit_scale=2.0, prob_thd=0.3)[0])
    fits = 4.0 * c * h * w / 2**20
    for keep_mb, area_thd, passes in ((fits, 0.1, 1), (fits * 0.99, 0.1, 2), (0.0, 0.1, 2), (fits, None, 1)):
        calls.clear()
        got = finish_strips(strips, (h, w), c, 0.3, area_thd, True, argmax_counts, decide, keep_mb=keep_mb)
        assert len(calls) == passes
        ref = want if area_thd else postprocess(logits, [0, 1, 2, 3], c, logit_scale=2.0, prob_thd=0.3)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
