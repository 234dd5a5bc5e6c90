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
