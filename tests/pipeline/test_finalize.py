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


@pytest.mark.parametrize("members,synonyms,area_thd", [(1, False, None), (3, True, 0.1), (1, True, None)])
def test_host_postprocess_in_strips_equals_whole_bit_for_bit(members, synonyms, area_thd):
    """On the CPU the post-processing runs in cache-sized strips (``ops.strip_mb``): the same numbers as the whole
    map, to the bit (the resize of a strip is a slice of the whole resize; softmax, merge and decision are per
    pixel)."""
    from clipsam.ops.numpy_ops import NumpyOps

    vocab = (
        Vocabulary.from_synonyms([["background", "sky"], ["cat"], ["dog", "puppy", "hound"], ["grass"]])
        if synonyms
        else Vocabulary.from_names(["background", "cat", "dog", "grass"])
    )
    cfg = dense_config("sclip", None, area_thd=area_thd, prob_thd=0.3)
    logits, weights, guides = _members(members, len(vocab.queries), seed=5)
    arrays = [m.numpy() for m in logits]
    whole_ops = NumpyOps()
    whole_ops.strip_mb = 1e9  # type: ignore[misc]
    whole = finalize_members(whole_ops, arrays, weights, guides, (30, 41), cfg, vocab, return_probs=True)
    for ops in (NumpyOps(), NUMPY_POST):
        given = arrays if isinstance(ops, NumpyOps) else logits
        strips = finalize_members(
            ops, given, weights, guides, (30, 41), cfg, vocab, max_strip_mb=0.002, return_probs=True
        )
        for a, b in zip(whole, strips):
            np.testing.assert_array_equal(a, b)
    assert (whole[0] == 0).any() and len(np.unique(whole[0])) > 2
    assert NumpyOps().strip_mb == NUMPY_POST.strip_mb < TORCH_POST.strip_mb


def test_output_pamr_refines_its_own_copy_in_place_and_leaves_the_members_alone():
    """Output PAMR (NACLIP) refines the upsampled copy in place; a member already at the output size is not
    touched, and repeated calls give the same numbers (numpy and torch CPU ops)."""
    from clipsam.ops.numpy_ops import NumpyOps

    vocab = Vocabulary.from_names(["background", "cat", "dog", "grass"])
    cfg = dense_config("naclip", None, prob_thd=0.0, pamr_iters=3, pamr_dilations=(1, 2))
    logits, weights, guides = _members(2, 4, seed=9)
    logits[1] = torch.nn.functional.interpolate(logits[1][None], size=(30, 41), mode="bilinear")[0]  # at output size
    guides[1] = torch.nn.functional.interpolate(guides[1][None], size=(30, 41), mode="bilinear")[0]
    for ops, conv in ((NumpyOps(), lambda t: t.numpy().copy()), (NUMPY_POST, lambda t: t.clone())):
        given = [conv(m) for m in logits]
        before = [m.numpy().copy() if isinstance(m, torch.Tensor) else m.copy() for m in given]
        first = finalize_members(ops, given, weights, [conv(g) for g in guides], (30, 41), cfg, vocab)
        for a, b in zip(given, before):
            np.testing.assert_array_equal(a.numpy() if isinstance(a, torch.Tensor) else a, b)
        again = finalize_members(ops, given, weights, [conv(g) for g in guides], (30, 41), cfg, vocab)
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).standard_normal((1, 3, 20, 24)).astype(np.float32)
    img = np.random.default_rng(1).standard_normal((1, 3, 20, 24)).astype(np.float32)
    want = NumpyOps().pamr(img, x, 4, (1, 2))
    got = NumpyOps().pamr(img, x, 4, (1, 2), in_place=True)
    assert got is x
    np.testing.assert_array_equal(got, want)
