"""finalize_members: the torch (GPU) post-processing equals the numpy reference, on CPU tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipsam.config import dense_config
from clipsam.dense.ops import TorchOps
from clipsam.pipeline import finalize_members
from clipsam.vocabulary import Vocabulary

NUMPY_POST, TORCH_POST = TorchOps("cpu"), TorchOps("cpu", post_on_device=True)


def _members(n: int, q: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    sizes = [(12, 16), (18, 24), (9, 12)][:n]
    logits = [torch.randn(q, h, w, generator=gen) * 0.05 for h, w in sizes]
    guides = [torch.randn(3, h, w, generator=gen) for h, w in sizes]
    return logits, [1.0 / n] * n, guides


@pytest.mark.parametrize("combine", ["prob_mean", "logit_mean"])
@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("synonyms", [False, True])
@pytest.mark.parametrize("area_thd", [None, 0.1])
def test_device_postprocess_equals_numpy(combine, members, synonyms, area_thd):
    vocab = (
        Vocabulary.from_synonyms([["background", "sky"], ["cat"], ["dog", "puppy", "hound"], ["grass"]])
        if synonyms
        else Vocabulary.from_names(["background", "cat", "dog", "grass"])
    )
    cfg = dense_config("sclip", None, combine=combine, area_thd=area_thd, prob_thd=0.3)
    logits, weights, guides = _members(members, len(vocab.queries), seed=members + 10 * synonyms)
    ref = finalize_members(NUMPY_POST, logits, weights, guides, (30, 41), cfg, vocab, return_probs=True)
    dev = finalize_members(TORCH_POST, logits, weights, guides, (30, 41), cfg, vocab, return_probs=True)
    assert (ref[0] == 0).any() and (ref[0] != 0).any()  # the threshold and the argmax both matter here
    assert np.array_equal(ref[0], dev[0])
    assert dev[0].dtype == np.int32 and dev[1].dtype == np.float32 and dev[2].dtype == np.float32
    np.testing.assert_allclose(dev[1], ref[1], atol=1e-6)  # float32: same formula, other summation order
    np.testing.assert_allclose(dev[2], ref[2], atol=1e-6)


def test_device_postprocess_in_strips_equals_whole():
    vocab = Vocabulary.from_names(["background", "cat", "dog"])
    cfg = dense_config("sclip", None, area_thd=0.1)
    logits, weights, guides = _members(3, 3, seed=3)
    whole = finalize_members(TORCH_POST, logits, weights, guides, (40, 50), cfg, vocab)
    strips = finalize_members(TORCH_POST, logits, weights, guides, (40, 50), cfg, vocab, max_strip_mb=0.002)
    assert np.mean(whole[0] == strips[0]) >= 0.999
    np.testing.assert_allclose(whole[1], strips[1], atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_postprocess_equals_numpy():
    vocab = Vocabulary.from_synonyms([["background", "sky"], ["cat"], ["dog", "puppy"]])
    cfg = dense_config("sclip", None, area_thd=0.1, prob_thd=0.3)
    logits, weights, guides = _members(3, len(vocab.queries), seed=7)
    ref = finalize_members(NUMPY_POST, logits, weights, guides, (30, 41), cfg, vocab, return_probs=True)
    dev = finalize_members(
        TorchOps("cuda"),
        [m.cuda() for m in logits],
        weights,
        [g.cuda() for g in guides],
        (30, 41),
        cfg,
        vocab,
        return_probs=True,
    )
    assert np.array_equal(ref[0], dev[0])
    np.testing.assert_allclose(dev[1], ref[1], atol=1e-5)  # GPU float32 (no TF32 here: element-wise only)
    np.testing.assert_allclose(dev[2], ref[2], atol=1e-5)
