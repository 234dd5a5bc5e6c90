"""sfr_affinity: the reference on a grid worked by hand, and the Triton kernels against it (Triton's
interpreter on CPU, small grids; real grid sizes on a GPU)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from clipsam.kernels import sfr_affinity_ref

sa = importlib.import_module("clipsam.kernels.sfr_affinity")

needs_triton = pytest.mark.skipif(not sa.HAS_TRITON, reason="triton is not installed")

# A 2 x 3 grid; patches 0..5 at (0,0) (0,1) (0,2) / (1,0) (1,1) (1,2).
GRID = [[0, 0, 1], [1, 0, 0]]
E1, E2 = math.exp(-1 / 2), math.exp(-2 / 2)  # decay exp(-d/D) for d = 1, 2 (D = 2)
# S after the path check, worked by hand. Same-label pairs: {0, 1, 4, 5} and {2, 3}. With D = 2 the samples
# are t = 0, 1/2, 1 (prefix: k <= d), positions rounded half to even:
#   1 -> 5, (0,1) -> (1,2), d = 1: t = 1/2 gives (0.5, 1.5) -> (0, 2) = patch 2, label 1: invalid -> e^-1/2
#   5 -> 1: (0.5, 1.5) -> (0, 2) again: invalid.  2 -> 3 and 3 -> 2, d = 2: midpoint (0.5, 1) -> (0, 1) = patch 1,
#   label 0: invalid -> e^-1.  0 -> 5, d = 2: midpoint (0.5, 1) -> (0, 1), label 0: valid.
#   Every other same-label pair has a valid midpoint ((0.5, 0.5) -> (0, 0), (1, 1.5) -> (1, 2), ...).
S_PREFIX = [
    [1, 1, 0, 0, 1, 1],
    [1, 1, 0, 0, 1, E1],
    [0, 0, 1, E2, 0, 0],
    [0, 0, E2, 1, 0, 0],
    [1, 1, 0, 0, 1, 1],
    [1, E1, 0, 0, 1, 1],
]
# "full" steps t by 1/d_ij: a d = 1 pair samples only its two ends, so 1 -> 5 and 5 -> 1 stay valid.
S_FULL = [row[:] for row in S_PREFIX]
S_FULL[1][5] = S_FULL[5][1] = 1
S_NONE = [[1.0 if a == b else 0.0 for b in sum(GRID, [])] for a in sum(GRID, [])]


def finish_by_hand(s: list[list[float]], std: float) -> torch.Tensor:
    """Raster blur (zero padding), ReLU, row normalisation, CLS embedding, global max, fp16; plain Python."""
    n = len(s)
    size = min(n, int(6 * std + 1))
    size = size if size % 2 == 1 else size + 1  # n = 6 -> 7 taps, pad 3
    pad = size // 2
    g = [math.exp(-((x - pad) ** 2) / (2 * std**2)) for x in range(size)]
    g = [x / sum(g) for x in g]
    blurred = [
        [max(0.0, sum(g[t] * s[i][j + t - pad] for t in range(size) if 0 <= j + t - pad < n)) for j in range(n)]
        for i in range(n)
    ]
    rows = [[x / (sum(r) + 1e-8) for x in r] for r in blurred]
    top = max(max(r) for r in rows)
    full = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    full[1:, 1:] = torch.tensor(rows, dtype=torch.float64) / top
    return full.half()


@pytest.mark.parametrize("path_check, s", [("prefix", S_PREFIX), ("full", S_FULL), ("none", S_NONE)])
@pytest.mark.parametrize("std", [5.0, 1.0])
def test_ref_2x3_grid_by_hand(path_check, s, std):
    out = sfr_affinity_ref(torch.tensor([GRID]), gaussian_std=std, path_check=path_check)
    assert out.dtype == torch.float16 and out.shape == (1, 7, 7)
    torch.testing.assert_close(out[0].float(), finish_by_hand(s, std).float(), atol=1e-3, rtol=0)


def test_ref_full_path_check_differs_from_prefix():
    labels = torch.tensor([GRID])
    prefix = sfr_affinity_ref(labels, path_check="prefix")
    full = sfr_affinity_ref(labels, path_check="full")
    assert not torch.equal(prefix, full)
    assert full[0, 2, 6] > prefix[0, 2, 6]  # (1 -> 5): decayed by the prefix check only (index +1 for CLS)


def test_ref_layout_and_scaling():
    out = sfr_affinity_ref(torch.randint(0, 4, (3, 4, 5)))
    assert out.shape == (3, 21, 21) and out.dtype == torch.float16
    assert (out[:, 0] == 0).all() and (out[:, :, 0] == 0).all()
    assert torch.equal(out.flatten(1).amax(1), torch.ones(3, dtype=torch.float16))
    one = sfr_affinity_ref(torch.zeros(1, 1, 1, dtype=torch.long))
    assert torch.equal(one, torch.tensor([[[0.0, 0.0], [0.0, 1.0]]], dtype=torch.float16))


def test_ref_2d_blur_equals_raster_on_one_row():
    # one grid row: nothing to wrap, and the vertical pass only scales rows, which normalisation removes
    labels = torch.tensor([[[0, 0, 1, 1, 2, 0, 1]]])
    torch.testing.assert_close(
        sfr_affinity_ref(labels, blur="2d").float(), sfr_affinity_ref(labels, blur="raster").float(), atol=1e-3, rtol=0
    )


def test_ref_rejects_bad_arguments():
    with pytest.raises(ValueError, match="labels must be"):
        sfr_affinity_ref(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="path_check"):
        sfr_affinity_ref(torch.zeros(1, 3, 3, dtype=torch.long), path_check="half")
    with pytest.raises(ValueError, match="blur"):
        sfr_affinity_ref(torch.zeros(1, 3, 3, dtype=torch.long), blur="box")


# ---- the kernels ---------------------------------------------------------------------------------------


def random_labels(b, h, w, classes=3, blocky=True, device="cpu"):
    """Blocky labels (regions, as SFR sees them) or per-patch noise (many invalid paths)."""
    if not blocky:
        return torch.randint(0, classes, (b, h, w), device=device)
    coarse = torch.randint(0, classes, (b, 1, (h + 2) // 3, (w + 2) // 3), device=device).float()
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="nearest").long()[:, 0]


def check_kernel(labels, **kw):
    out = sa.sfr_affinity_triton(labels, **kw)
    ref = sfr_affinity_ref(labels, **kw)
    assert out.dtype == torch.float16 and out.shape == ref.shape
    # Same arithmetic except the order of the blur taps and of the row sums: fp32 rounding, which moves
    # an fp16 value by one unit in the last place now and then.
    diff = (out.float() - ref.float()).abs()
    assert diff.max() <= 1e-3, f"max |kernel - ref| = {diff.max():.3e}"
    assert (diff > 0).float().mean() < 0.01


@needs_triton
def test_kernel_2x3_grid_by_hand():
    out = sa.sfr_affinity_triton(torch.tensor([GRID]))
    torch.testing.assert_close(out[0].float(), finish_by_hand(S_PREFIX, 5.0).float(), atol=1e-3, rtol=0)
    assert torch.equal(out, sfr_affinity_ref(torch.tensor([GRID])))


@needs_triton
@pytest.mark.parametrize("path_check", ["prefix", "none"])
@pytest.mark.parametrize(
    "grid, std, blocky",
    [
        ((1, 1), 5.0, True),
        ((1, 5), 5.0, False),
        ((2, 3), 1.0, False),
        ((5, 7), 5.0, True),
        ((4, 9), 1.5, False),
        ((6, 9), 1.0, True),
    ],
)
def test_kernel_matches_reference(grid, std, blocky, path_check):
    check_kernel(random_labels(2, *grid, blocky=blocky), gaussian_std=std, path_check=path_check)


@needs_triton
def test_kernel_rejects_unfused_modes():
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="path_check='full'"):
        sa.sfr_affinity_triton(labels, path_check="full")
    with pytest.raises(ValueError, match="blur='2d'"):
        sa.sfr_affinity_triton(labels, blur="2d")


@needs_triton
def test_custom_op_opcheck():
    torch.library.opcheck(torch.ops.clipsam.sfr_affinity.default, (random_labels(2, 2, 3), 5.0, "prefix"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("grid", [(14, 14), (21, 31), (28, 28), (32, 32), (45, 45)])
@pytest.mark.parametrize("path_check", ["prefix", "none"])
def test_gpu_kernel_matches_reference(grid, path_check):
    for blocky in (True, False):
        check_kernel(random_labels(2, *grid, classes=5, blocky=blocky, device="cuda"), path_check=path_check)
