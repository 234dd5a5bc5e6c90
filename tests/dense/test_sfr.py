"""SFR host steps: first-pass probabilities and per-patch majority labels."""

from __future__ import annotations

import torch

from clipsam.dense.sfr import first_pass_probs, patch_labels


def _one_hot_probs(pred, q, conf=0.9):
    probs = torch.full((q,) + pred.shape, (1 - conf) / (q - 1))
    probs.scatter_(0, pred[None], conf)
    return probs[None]


def test_patch_labels_mode_with_smallest_label_on_ties():
    pred = torch.zeros(4, 6, dtype=torch.long)
    pred[0:2, 0:2] = torch.tensor([[2, 2], [2, 1]])  # patch (0,0): mode 2
    pred[0:2, 2:4] = torch.tensor([[3, 1], [1, 3]])  # tie 1 vs 3 -> 1
    pred[2:4, 4:6] = torch.tensor([[4, 4], [4, 4]])
    labels = patch_labels(_one_hot_probs(pred, 5), patch=2, temp_thd=0.5)
    assert labels.tolist() == [[[2, 1, 0], [0, 0, 4]]]


def test_patch_labels_low_confidence_joins_query_zero_and_remainder_dropped():
    pred = torch.full((5, 5), 3, dtype=torch.long)  # 5x5 with patch 2 -> 2x2 grid, last row/col dropped
    probs = _one_hot_probs(pred, 4, conf=0.9)
    probs[:, :, :2, :2] = 0.25  # max 0.25 < temp_thd -> query 0 for that patch
    labels = patch_labels(probs, patch=2, temp_thd=0.3)
    assert labels.shape == (1, 2, 2)
    assert labels.tolist() == [[[0, 3], [3, 3]]]


def test_first_pass_probs_softmax_over_queries():
    logits = torch.randn(2, 4, 8, 8)
    crops = torch.randn(2, 3, 8, 8)
    p = first_pass_probs(logits, crops, 40.0, 0, (8, 16))
    torch.testing.assert_close(p, torch.softmax(40 * logits, dim=1))
    assert torch.allclose(first_pass_probs(logits, crops, 40.0, 2, (1,)).sum(1), torch.ones(2, 8, 8))
