"""numpy SFR host steps and PAMR against the torch references (clipsam.dense.sfr/pamr, kernels.sfr_affinity_ref)."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.engine import pamr as npamr
from clipsam.engine import sfr as nsfr
from clipsam.engine.errors import EngineLimitError

torch = pytest.importorskip("torch")


def _torch_table(max_d: int) -> nsfr.LinspaceTable:
    tables = [torch.linspace(0, 1, d + 1).numpy() for d in range(1, max_d + 1)]
    return nsfr.LinspaceTable(np.concatenate(tables), np.concatenate([[0], np.cumsum([len(t) for t in tables])]))


@pytest.mark.parametrize("dilations,iters,resize", [((8, 16), 10, False), ((1, 2), 3, True)])
def test_pamr(dilations, iters, resize):
    from clipsam.dense.pamr import pamr

    rng = np.random.default_rng(0)
    img = rng.standard_normal((2, 3, 40, 52)).astype(np.float32)
    logits = rng.standard_normal((2, 5, 20, 26) if resize else (2, 5, 40, 52)).astype(np.float32)
    ref = pamr(torch.from_numpy(img), torch.from_numpy(logits), iters, dilations).numpy()
    np.testing.assert_allclose(npamr.pamr(img, logits, iters, dilations), ref, atol=1e-5, rtol=0)
    assert npamr.pamr(img, logits, 0, dilations) is logits


def test_first_pass_probs_and_patch_labels():
    from clipsam.dense import sfr

    rng = np.random.default_rng(1)
    img = rng.standard_normal((2, 3, 48, 64)).astype(np.float32)
    logits = (0.05 * rng.standard_normal((2, 6, 48, 64))).astype(np.float32)
    ref = sfr.first_pass_probs(torch.from_numpy(logits), torch.from_numpy(img), 40.0, 10, (8, 16))
    got = nsfr.first_pass_probs(logits, img, 40.0, 10, (8, 16))
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-5, rtol=0)
    for thd in (0.0, 0.3, 0.9):
        np.testing.assert_array_equal(nsfr.patch_labels(ref.numpy(), 16, thd), sfr.patch_labels(ref, 16, thd).numpy())
    probs = rng.random((3, 4, 50, 37)).astype(np.float32)  # remainder rows/columns dropped
    np.testing.assert_array_equal(nsfr.patch_labels(probs, 16, 0.2),
                                  sfr.patch_labels(torch.from_numpy(probs), 16, 0.2).numpy())


@pytest.mark.parametrize("grid", [(4, 3), (14, 14), (5, 17)])
@pytest.mark.parametrize("path_check", ["prefix", "full", "none"])
@pytest.mark.parametrize("blur", ["raster", "2d"])
def test_sfr_affinity(grid, path_check, blur):
    from clipsam.kernels import sfr_affinity_ref

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, (2, *grid))
    labels[:, : grid[0] // 2] = 1
    ref = sfr_affinity_ref(torch.from_numpy(labels), gaussian_std=5.0, path_check=path_check, blur=blur).numpy()
    got = nsfr.sfr_affinity(labels, 5.0, path_check, blur, _torch_table(20))
    assert got.dtype == np.float16 and got.shape == ref.shape
    diff = np.abs(got.astype(np.float32) - ref.astype(np.float32))
    # float32 summation order (blur, row sums) may move a value across an fp16 rounding boundary: one fp16 ulp
    assert diff.max() <= 2.0**-11 * 1.0001 and (diff > 0).mean() < 0.002


def test_sfr_bias_rounds_like_torch_fp16():
    s = torch.rand(2, 30, 30).half()
    for lam in (0.7, 0.6, 1 / 3):
        np.testing.assert_array_equal(nsfr.sfr_bias(s.numpy(), lam), (lam * s).float().numpy())


def test_linspace_table_limits():
    table = _torch_table(5)
    np.testing.assert_array_equal(table(5), torch.linspace(0, 1, 6).numpy())
    with pytest.raises(EngineLimitError, match="Re-export with a larger --max-side"):
        table(6)
