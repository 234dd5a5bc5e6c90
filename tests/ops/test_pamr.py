"""numpy PAMR against the torch reference (clipsam.kernels.pamr_ref)."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.ops import pamr as npamr

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("dilations,iters,resize", [((8, 16), 10, False), ((1, 2), 3, True)])
def test_pamr(dilations, iters, resize):
    from clipsam.kernels import pamr_ref as pamr

    rng = np.random.default_rng(0)
    img = rng.standard_normal((2, 3, 40, 52)).astype(np.float32)
    logits = rng.standard_normal((2, 5, 20, 26) if resize else (2, 5, 40, 52)).astype(np.float32)
    ref = pamr(torch.from_numpy(img), torch.from_numpy(logits), iters, dilations).numpy()
    np.testing.assert_allclose(npamr.pamr(img, logits, iters, dilations), ref, atol=1e-5, rtol=0)
    assert npamr.pamr(img, logits, 0, dilations) is logits


@pytest.mark.parametrize(
    "shape,dilations",
    [
        ((3, 336, 448), (8, 16)),
        ((3, 20, 17), (1, 2)),
        ((3, 5, 6), (8, 16)),
        ((2, 30, 40), (1, 2, 3)),
        ((1, 9, 9), (4,)),
    ],
)
def test_compiled_affinity_equals_the_reference(shape, dilations):
    """The neighbour weights from the compiled kernel equal numpy's bit for bit: flat regions (sigma 0, the 1e-8
    floor), neighbours clamped at every border, dilations larger than the image, one or several channels."""
    rng = np.random.default_rng(sum(shape))
    img = rng.standard_normal(shape).astype(np.float32)
    img[:, :4, :5] = 0.3
    got = npamr._affinity(img, dilations)
    want = npamr._affinity_ref(img, dilations)
    np.testing.assert_array_equal(got, want)
    assert got.shape == (8 * len(dilations),) + shape[1:] and np.allclose(got.sum(axis=0), 1.0, atol=1e-5)
