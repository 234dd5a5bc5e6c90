"""TorchOps: SFR's per-patch majority labels, and the SFR step over them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipsam.config import dense_config
from clipsam.dense.ops import TorchOps, patch_labels


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


def test_first_pass_labels_softmax_over_queries():
    """Both CPU implementations of SFR's first pass give the patch mode of the thresholded argmax of
    softmax(logit_scale * logits) over the queries (no PAMR: the logits are already at crop size)."""
    logits = torch.randn(2, 4, 8, 8)
    crops = torch.randn(2, 3, 8, 8)
    for thd in (0.0, 0.5, 0.9):
        want = patch_labels(torch.softmax(40 * logits, dim=1), 2, thd)
        for cpu_ops in ("torch", "compiled"):
            got = TorchOps("cpu", cpu_ops=cpu_ops).first_pass_labels(logits, crops, 2, 40.0, thd, 0, (1,))
            assert torch.equal(got, want), (cpu_ops, thd)


class _LabelRecorder:
    """Forwards to a HostOps and keeps the patch labels of SFR's first pass."""

    def __init__(self, ops):
        self.ops, self.labels = ops, []

    def __getattr__(self, name):
        return getattr(self.ops, name)

    def first_pass_labels(self, *args):
        out = self.ops.first_pass_labels(*args)
        self.labels.append(out.clone())
        return out


@pytest.mark.parametrize(
    "method,preset,overrides",
    [
        ("resclip", "voc21", {"temp_thd": 0.0, "logit_scale": 100.0}),  # SFR with several patch labels per window
        ("resclip", "context60", {"temp_thd": 0.0}),  # sliding windows, SFR per window
        ("naclip", "ade20k", {}),  # output PAMR at full size
        ("sclip", "voc21", {}),
    ],
)
def test_compiled_cpu_ops_match_the_torch_ops(tiny_clip, chelsea_small, method, preset, overrides):
    """cpu_ops="compiled" (shared host kernels) against cpu_ops="torch" (PyTorch ops): float32 rounding only."""
    from clipsam.segmenter import Segmenter

    cfg = dense_config(method, preset, templates=("a photo of a {}.",), **overrides)
    ref = Segmenter(tiny_clip, cfg, cpu_ops="torch")
    got = Segmenter(tiny_clip, cfg, cpu_ops="compiled")
    assert isinstance(ref.backend.ops._host, type(None)) and got.backend.ops._host is not None
    rec = got.backend.ops = _LabelRecorder(got.backend.ops)
    a, b = ref.logits(chelsea_small), got.logits(chelsea_small)
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)
    if method == "resclip":
        assert any(len(torch.unique(x)) > 1 for x in rec.labels)  # S_hat is not degenerate
    ra, rb = ref.segment(chelsea_small), got.segment(chelsea_small)
    assert (ra.labels == rb.labels).mean() >= 0.999
    np.testing.assert_allclose(rb.scores, ra.scores, atol=1e-4, rtol=0)


def test_cpu_ops_is_checked_before_weights_load(monkeypatch):
    from clipsam import Segmenter
    from clipsam.errors import ConfigError

    def boom(*a, **k):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr("clipsam.models.load_clip", boom)
    with pytest.raises(ConfigError, match="cpu_ops must be one of"):
        Segmenter.from_pretrained(clip_weights=None, cpu_ops="numba")
