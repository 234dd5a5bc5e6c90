"""TorchOps: SFR's per-patch majority labels, and the SFR step over them."""

from __future__ import annotations

import torch

from clipsam.config import dense_config
from clipsam.dense.ops import TorchOps, patch_labels
from clipsam.ops.base import sfr_feedback


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


class _Recorder(TorchOps):
    """TorchOps that keeps the probabilities SFR's first pass hands to ``patch_labels``."""

    def patch_labels(self, probs, patch, temp_thd):
        self.probs = probs
        return super().patch_labels(probs, patch, temp_thd)


def test_first_pass_probs_softmax_over_queries():
    logits = torch.randn(2, 4, 8, 8)  # already at crop size: the resize keeps them
    crops = torch.randn(2, 3, 8, 8)
    ops = _Recorder("cpu")
    sfr_feedback(ops, logits, crops, 1, dense_config("resclip", "voc21", sfr_pamr_iters=0, logit_scale=40.0))
    torch.testing.assert_close(ops.probs, torch.softmax(40 * logits, dim=1))
    sfr_feedback(ops, logits, crops, 1, dense_config("resclip", "voc21", sfr_pamr_iters=2, sfr_pamr_dilations=(1,)))
    assert torch.allclose(ops.probs.sum(1), torch.ones(2, 8, 8))
