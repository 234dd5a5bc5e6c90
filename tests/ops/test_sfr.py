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


class _Recorder:
    """Wraps a HostOps and keeps the probabilities SFR's first pass hands to ``patch_labels``."""

    def __init__(self, ops):
        self.ops = ops

    def __getattr__(self, name):
        return getattr(self.ops, name)

    def patch_labels(self, probs, patch, temp_thd):
        self.probs = probs
        return self.ops.patch_labels(probs, patch, temp_thd)


def test_first_pass_probs_and_patch_labels():
    from clipsam.config import dense_config
    from clipsam.dense.ops import TorchOps, patch_labels
    from clipsam.ops.base import sfr_feedback
    from clipsam.ops.numpy_ops import NumpyOps

    rng = np.random.default_rng(1)
    img = rng.standard_normal((2, 3, 48, 64)).astype(np.float32)
    logits = (0.05 * rng.standard_normal((2, 6, 48, 64))).astype(np.float32)
    cfg = dense_config("resclip", "voc21", logit_scale=40.0, sfr_pamr_iters=10, sfr_pamr_dilations=(8, 16))
    ref_ops, got_ops = _Recorder(TorchOps("cpu", cpu_ops="torch")), _Recorder(NumpyOps())
    sfr_feedback(ref_ops, torch.from_numpy(logits), torch.from_numpy(img), 16, cfg)
    sfr_feedback(got_ops, logits, img, 16, cfg)
    ref = ref_ops.probs
    np.testing.assert_allclose(got_ops.probs, ref.numpy(), atol=1e-5, rtol=0)
    for thd in (0.0, 0.3, 0.9):
        np.testing.assert_array_equal(nsfr.patch_labels(ref.numpy(), 16, thd), patch_labels(ref, 16, thd).numpy())
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
