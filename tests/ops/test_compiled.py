"""The compiled CPU kernels equal their numpy references bit for bit, on shapes that reach every branch."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.ops import compiled_pamr, compiled_pamr_sweeps
from clipsam.ops.pamr import NEIGHBOUR_OFFSETS, _offsets, pamr, pamr_ref
from clipsam.ops.resize import linspace_f32, resize_bilinear, resize_bilinear_ref
from clipsam.ops.sfr import path_valid, path_valid_ref


def _naive_pamr_iterations(m: np.ndarray, a: np.ndarray, offs: np.ndarray, num_iter: int) -> np.ndarray:
    """M <- sum_p a_p * M[clamp(y + dy_p), clamp(x + dx_p)], accumulated in p order in float32 (plain loops)."""
    h, w = m.shape[-2:]
    ys, xs = np.arange(h), np.arange(w)
    for _ in range(num_iter):
        out = np.zeros_like(m)
        for p, (dy, dx) in enumerate(offs):
            out = out + a[p] * m[:, np.clip(ys + dy, 0, h - 1)][:, :, np.clip(xs + dx, 0, w - 1)]
        m = out
    return m


@pytest.mark.parametrize("num_iter", [1, 2, 5])
@pytest.mark.parametrize(
    "npt", [5, 8, 16, 19, 24]
)  # 16: one sweep per pair; 5, 19: single neighbours after groups of 8
@pytest.mark.parametrize("reach", [12, 20, 0])  # column padding of one cache line, of two, and none
@pytest.mark.parametrize("single", [False, True])  # one channel at a time: asked for, but only for dilations (8, 16)
def test_pamr_kernel_against_plain_loops(num_iter, npt, reach, single):
    rng = np.random.default_rng(npt + num_iter + reach)
    c, h, w = 11, 9, 23  # channels [3, 10): three pairs and an odd last channel; rows of no whole line
    m = rng.standard_normal((c, h, w)).astype(np.float32)
    a = rng.random((npt, h, w)).astype(np.float32)
    offs = rng.integers(-reach, reach + 1, (npt, 2)).astype(np.int64)  # offsets beyond the size: clamped reads
    offs[0, 1] = -reach  # the reach itself occurs
    if reach:
        offs[:, 0] = rng.integers(-12, 13, npt)
    got = m.copy()
    compiled_pamr.pamr_channels(got, compiled_pamr.pamr_weights(a), offs, 3, 10, num_iter, single)  # [3, 10) only
    ref = _naive_pamr_iterations(m[3:10], a, offs, num_iter)
    np.testing.assert_array_equal(got[3:10], ref)
    np.testing.assert_array_equal(got[:3], m[:3])
    np.testing.assert_array_equal(got[10:], m[10:])


@pytest.mark.parametrize("num_iter", [1, 3, 10, 37])  # 37: the wavefront's passes of 16, 16 and 5 iterations
@pytest.mark.parametrize("hw", [(9, 23), (33, 16), (40, 37), (35, 64), (70, 20)])  # clamped everywhere .. nowhere
@pytest.mark.parametrize("kernel", ["sweeps", "wavefront", "pairs"])
def test_the_default_dilations_kernels_against_plain_loops(hw, kernel, num_iter):
    """Dilations (8, 16): one channel at a time with the offsets as constants, iteration by iteration ("sweeps") or
    all iterations in one pass over the rows ("wavefront": rings of 33 rows, so planes shorter, as tall and taller,
    with iterations in flight over more rows than the plane has), and the run-time-offset pairs (an odd block here:
    the last channel paired with a copy of itself); channels outside the block untouched."""
    rng = np.random.default_rng(hw[0] + num_iter)
    offs = _offsets((8, 16))
    assert compiled_pamr_sweeps.is_d8_d16(offs)
    m = rng.standard_normal((11, *hw)).astype(np.float32)
    a = rng.random((16, *hw)).astype(np.float32)
    got = m.copy()
    if kernel == "wavefront":
        compiled_pamr.pamr_wavefront(got, compiled_pamr.pamr_weights(a), 3, 10, num_iter)
    else:
        compiled_pamr.pamr_channels(got, compiled_pamr.pamr_weights(a), offs, 3, 10, num_iter, kernel == "sweeps")
    np.testing.assert_array_equal(got[3:10], _naive_pamr_iterations(m[3:10], a, offs, num_iter))
    np.testing.assert_array_equal(got[:3], m[:3])
    np.testing.assert_array_equal(got[10:], m[10:])


def test_only_the_default_dilations_take_the_constant_kernel():
    swapped = _offsets((8, 16))
    swapped[[0, 2]] = swapped[[2, 0]]  # the same neighbours in another order: other sums
    for offs in (_offsets((16, 8)), _offsets((1, 2)), _offsets((8,)), _offsets((8, 16, 32)), swapped):
        assert not compiled_pamr_sweeps.is_d8_d16(offs)


@pytest.mark.parametrize(
    "channels,hw,dilations,iters",
    [(56, (48, 64), (8, 16), 10), (1, (7, 5), (8, 16), 3), (13, (33, 40), (1, 2, 4), 1), (3, (20, 2), (2,), 4)],
)
def test_pamr_equals_numpy_reference(channels, hw, dilations, iters):
    rng = np.random.default_rng(channels)
    img = rng.standard_normal((2, 3, *hw)).astype(np.float32)
    logits = rng.standard_normal((2, channels, hw[0] // 2 + 1, hw[1] // 2 + 1)).astype(np.float32)
    before = logits.copy()
    got = pamr(img, logits, iters, dilations)
    np.testing.assert_array_equal(got, pamr_ref(img, logits, iters, dilations))
    np.testing.assert_array_equal(logits, before)  # the input is not touched
    assert len(NEIGHBOUR_OFFSETS) == 8


def test_pamr_buffers_start_on_cache_lines():
    """The weights (row-major, rows of whole lines) and both planes start on 64-byte lines, the planes 2 KiB apart
    modulo 4 KiB (whatever the plane size)."""
    rng = np.random.default_rng(0)
    for (npt, h, w), wl in (((16, 224, 224), 224), ((16, 5, 23), 32), ((8, 1, 1), 16)):
        a = rng.random((npt, h, w)).astype(np.float32)
        got = compiled_pamr.pamr_weights(a)
        assert got.shape == (h, npt, wl) and got.dtype == np.float32 and got.flags.c_contiguous
        assert got.ctypes.data % 64 == 0
        np.testing.assert_array_equal(got[:, :, :w], a.transpose(1, 0, 2))
        assert not got[:, :, w:].any()
    for nc, h, wp in ((2, 224, 256), (1, 9, 48), (3, 7, 32)):
        src, dst = compiled_pamr._plane_pair(nc, h, wp)
        assert src.shape == dst.shape == (nc, h, wp) and src.flags.c_contiguous and dst.flags.c_contiguous
        assert src.ctypes.data % 64 == 0 and dst.ctypes.data % 64 == 0
        assert (dst.ctypes.data - src.ctypes.data) % 4096 == 2048
        assert dst.ctypes.data >= src.ctypes.data + src.nbytes  # no overlap


@pytest.mark.parametrize(
    "src,dst",
    [((7, 9), (64, 80)), ((21, 28), (336, 448)), ((30, 40), (17, 23)), ((1, 5), (4, 3)), ((64, 48), (100, 33))],
)
@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_equals_numpy_reference(src, dst, align_corners):
    rng = np.random.default_rng(0)
    for lead in ((), (3,), (2, 3)):
        x = rng.standard_normal((*lead, *src)).astype(np.float32)
        np.testing.assert_array_equal(
            resize_bilinear(x, dst, align_corners), resize_bilinear_ref(x, dst, align_corners)
        )
    x = rng.standard_normal((5, *src)).astype(np.float32)
    full = resize_bilinear_ref(x, dst, align_corners)
    for r0, r1 in ((0, 1), (dst[0] // 3, dst[0] // 2 + 1), (dst[0] - 1, dst[0])):
        np.testing.assert_array_equal(resize_bilinear(x, dst, align_corners, rows=(r0, r1)), full[:, r0:r1])
    strided = np.asarray(x[:, ::-1])  # non-contiguous input
    np.testing.assert_array_equal(resize_bilinear(strided, dst), resize_bilinear_ref(strided, dst))


@pytest.mark.parametrize("grid", [(1, 9), (9, 1), (5, 7), (14, 14), (21, 28)])
@pytest.mark.parametrize("mode", ["prefix", "full"])
def test_path_check_equals_numpy_reference(grid, mode):
    h, w = grid
    rng = np.random.default_rng(h * w)
    labels = rng.integers(0, 3, grid)
    labels[: max(1, h // 2), : max(1, w // 2)] = 1  # regions large enough that some paths stay inside
    t = linspace_f32(0.0, 1.0, max(h, w))
    got = path_valid(labels.ravel(), h, w, t, mode)
    ref = path_valid_ref(labels.ravel(), h, w, t, mode)
    np.testing.assert_array_equal(got, ref)
    assert 0 < got.mean() < 1  # both outcomes occur


def test_kernels_compile_without_a_writable_cache(tmp_path):
    """Read-only install and no writable cache folder: one warning, and the kernels still run (no disk cache)."""
    import subprocess
    import sys

    code = (
        "import warnings, numba.core.caching as c, numpy as np\n"
        "c.CacheImpl._locator_classes = []  # numba finds no writable place for its cache\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    from clipsam.ops.resize import resize_bilinear, resize_bilinear_ref\n"
        "    x = np.random.default_rng(0).standard_normal((2, 5, 7)).astype(np.float32)\n"
        "    assert np.array_equal(resize_bilinear(x, (9, 4)), resize_bilinear_ref(x, (9, 4)))\n"
        "assert sum('NUMBA_CACHE_DIR' in str(m.message) for m in w) == 1, [str(m.message) for m in w]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
