"""Deferred two-step upsampling: the same labels, scores and probabilities as the materialised middle image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipsam.config import dense_config
from clipsam.dense.ops import TorchOps
from clipsam.ops.numpy_ops import NumpyOps
from clipsam.pipeline import finalize_members, plan_members, run_members
from clipsam.pipeline.deferred import Upsampled, materialise
from clipsam.vocabulary import Vocabulary

VOCAB = Vocabulary.from_synonyms([["background", "sky"], ["cat"], ["dog", "puppy"], ["grass"]])


def _grids(seed: int):
    """Two members' patch grids (Q=6) and the sizes they are upsampled to, the second one flipped."""
    gen = torch.Generator().manual_seed(seed)
    grids = [torch.randn(6, 4, 5, generator=gen) * 0.4, torch.randn(6, 3, 5, generator=gen) * 0.4]
    return grids, [(56, 70), (36, 60)], [False, True]


@pytest.mark.parametrize("ops", [NumpyOps(), TorchOps("cpu")], ids=["numpy", "torch-cpu"])
@pytest.mark.parametrize("pamr", [0, 3])
@pytest.mark.parametrize("strip_mb", [0.002, 256.0])
def test_finalize_equals_the_materialised_middle_image(ops, pamr, strip_mb):
    cfg = dense_config("resclip", None, prob_thd=0.2, pamr_iters=pamr, pamr_dilations=(1, 2))
    grids, sizes, flips = _grids(pamr + int(strip_mb))
    conv = (lambda t: t.numpy()) if isinstance(ops, NumpyOps) else (lambda t: t)
    deferred = [Upsampled(conv(g), hw, f, ops.resize_twice) for g, hw, f in zip(grids, sizes, flips)]
    full = [ops.resize(conv(g), hw) for g, hw in zip(grids, sizes)]
    full = [ops.flip_w(x) if f else x for x, f in zip(full, flips)]
    for d, x in zip(deferred, full):
        assert d.shape == tuple(x.shape)
        np.testing.assert_array_equal(np.asarray(materialise(d)), np.asarray(x))
    gen = torch.Generator().manual_seed(1)
    guides = [conv(torch.randn(3, *hw, generator=gen)) for hw in sizes]
    args = ([0.5, 0.5], guides, (45, 64), cfg, VOCAB, strip_mb)
    want = finalize_members(ops, full, *args, return_probs=True)
    got = finalize_members(ops, deferred, *args, return_probs=True)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(want[0])) > 2 and (want[0] == 0).any()  # several classes and the threshold both decide


def test_run_members_defers_only_two_step_whole_image_on_host_ops(make_segmenter, chelsea_small):
    vocab = Vocabulary.from_names(["cat", "grass", "wall"])
    kinds = {}
    for name, method, kw in (
        ("resclip", "resclip", dict(slide_crop=0)),
        ("naclip", "naclip", dict(slide_crop=0)),
        ("sclip one-step", "sclip", dict(slide_crop=0)),
        ("resclip sliding", "resclip", dict(slide_crop=48, slide_stride=32)),
    ):
        seg = make_segmenter(method, None, short_side=48, **kw)
        members = plan_members([chelsea_small], seg.config, 16, seg.backend.ops)
        with torch.inference_mode():
            run_members(seg.backend, members, seg.text_embeddings(vocab), seg.config, 4)
        kinds[name] = type(members[0].logits)
    assert kinds == {
        "resclip": Upsampled,
        "naclip": Upsampled,
        "sclip one-step": torch.Tensor,
        "resclip sliding": torch.Tensor,
    }


@pytest.mark.parametrize(
    "method,kw",
    [
        ("resclip", dict(slide_crop=0, scales=(1.0, 0.75), flip=True)),
        ("naclip", dict(slide_crop=0, pamr_iters=2)),  # output PAMR reads the whole deferred map
    ],
)
def test_segment_equals_the_materialised_path(make_segmenter, chelsea_small, method, kw):
    """End to end through ``segment``: deferral on (the default on the CPU) and off give identical results."""
    seg = make_segmenter(method, None, short_side=48, templates=("a photo of a {}.",), **kw)
    classes = "cat, grass, wall, floor, sky, tree, dog, car"
    got = seg.segment(chelsea_small, classes=classes)
    ops = seg.backend.ops
    assert ops.resize_twice is not None
    ops.resize_twice = None  # the materialised path
    want = seg.segment(chelsea_small, classes=classes)
    assert np.array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.scores, want.scores)
    assert len(np.unique(want.labels)) > 1 and np.ptp(want.scores) > 0
