"""numpy SFR host steps against the torch references (clipsam.dense.ops, kernels.sfr_affinity_ref)."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.errors import EngineLimitError
from clipsam.ops import sfr as nsfr

torch = pytest.importorskip("torch")


def _torch_table(max_d: int) -> nsfr.LinspaceTable:
    tables = [torch.linspace(0, 1, d + 1).numpy() for d in range(1, max_d + 1)]
    return nsfr.LinspaceTable(np.concatenate(tables), np.concatenate([[0], np.cumsum([len(t) for t in tables])]))


def test_first_pass_labels_numpy_and_torch():
    """SFR's first pass on the host (``NumpyOps``: the fused ``clipsam.ops.first_pass``) against the torch ops
    (resize, PAMR with fused multiply-adds, torch.softmax): float32 rounding only, so the patch labels agree wherever
    the per-pixel decision is not within rounding of a tie; the inputs keep a margin so they agree everywhere."""
    from clipsam.dense.ops import TorchOps, patch_labels
    from clipsam.ops.numpy_ops import NumpyOps

    rng = np.random.default_rng(1)
    img = rng.standard_normal((2, 3, 48, 64)).astype(np.float32)
    first = np.zeros((2, 6, 3, 4), np.float32)
    for b in range(2):  # each patch's winner by a clear margin, several winners per crop
        first[b, rng.integers(0, 6, (3, 4)), np.arange(3)[:, None], np.arange(4)[None, :]] = 0.3
    first += (0.01 * rng.standard_normal(first.shape)).astype(np.float32)
    torch_ops, np_ops = TorchOps("cpu", cpu_ops="torch"), NumpyOps()
    for iters, thd in ((10, 0.0), (10, 0.5), (0, 0.9)):
        args = (16, 40.0, thd, iters, (8, 16))
        want = torch_ops.first_pass_labels(torch.from_numpy(first), torch.from_numpy(img), *args).numpy()
        got = np_ops.first_pass_labels(first, img, *args)
        assert got.dtype == np.int64 and got.shape == (2, 3, 4)
        np.testing.assert_array_equal(got, want)
        assert len(np.unique(got)) > 2
    probs = rng.random((3, 4, 50, 37)).astype(np.float32)  # remainder rows/columns dropped
    np.testing.assert_array_equal(
        nsfr.patch_labels(probs, 16, 0.2), patch_labels(torch.from_numpy(probs), 16, 0.2).numpy()
    )


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


def test_sfr_term_rounds_like_torch_fp16():
    s = torch.rand(2, 30, 30).half()
    for lam in (0.7, 0.6, 1 / 3):
        np.testing.assert_array_equal(nsfr.sfr_term(s.numpy(), lam), (lam * s).float().numpy())


def test_linspace_table_limits():
    table = _torch_table(5)
    np.testing.assert_array_equal(table(5), torch.linspace(0, 1, 6).numpy())
    with pytest.raises(EngineLimitError, match="Re-export with a larger --max-side"):
        table(6)
