"""PAMR: the reference against a direct per-pixel loop implementation of docs/algorithms.md section 7, and the
Triton kernel against the reference (Triton's interpreter on CPU tensors; a GPU where there is one)."""

from __future__ import annotations

import math

import pytest
import torch

from clipsam.errors import BackendUnavailableError
from clipsam.kernels import pamr_ref as pamr
from clipsam.kernels import pamr_triton
from clipsam.kernels.pamr import HAS_TRITON, NEIGHBOUR_OFFSETS

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")


def pamr_loops(img, mask, iters, dilations):
    _, k, h, w = img.shape
    c = mask.shape[1]

    def at(t, ch, y, x):  # replicate padding
        return float(t[0, ch, min(max(y, 0), h - 1), min(max(x, 0), w - 1)])

    aff = [[None] * w for _ in range(h)]
    for y in range(h):
        for x in range(w):
            per_nb = []
            sig = []
            for ch in range(k):
                samples = []
                for d in dilations:
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            samples.append(at(img, ch, y + dy * d, x + dx * d))
                mean = sum(samples) / len(samples)
                sig.append(math.sqrt(sum((s - mean) ** 2 for s in samples) / (len(samples) - 1)))
            for d in dilations:
                for dy, dx in NEIGHBOUR_OFFSETS:
                    vals = [
                        -abs(at(img, ch, y, x) - at(img, ch, y + dy * d, x + dx * d)) / (1e-8 + 0.1 * sig[ch])
                        for ch in range(k)
                    ]
                    per_nb.append(sum(vals) / k)
            m = max(per_nb)
            e = [math.exp(v - m) for v in per_nb]
            aff[y][x] = [v / sum(e) for v in e]
    cur = mask.clone()
    for _ in range(iters):
        nxt = torch.zeros_like(cur)
        for ch in range(c):
            for y in range(h):
                for x in range(w):
                    acc, p = 0.0, 0
                    for d in dilations:
                        for dy, dx in NEIGHBOUR_OFFSETS:
                            acc += aff[y][x][p] * at(cur, ch, y + dy * d, x + dx * d)
                            p += 1
                    nxt[0, ch, y, x] = acc
        cur = nxt
    return cur


def test_pamr_matches_loop_implementation():
    img = torch.randn(1, 3, 7, 9)
    mask = torch.randn(1, 2, 7, 9)
    ours = pamr(img, mask, num_iter=3, dilations=(1, 2))
    ref = pamr_loops(img, mask, 3, (1, 2))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_pamr_zero_iterations_is_identity_and_preserves_constant_masks():
    img = torch.randn(1, 3, 6, 6)
    mask = torch.randn(1, 4, 6, 6)
    assert pamr(img, mask, 0) is mask
    const = torch.full((1, 1, 6, 6), 3.0)
    torch.testing.assert_close(pamr(img, const, 5, (1, 2)), const)  # weights sum to 1, no self term


def test_pamr_does_not_modify_inputs():
    img = torch.randn(1, 3, 5, 5)
    mask = torch.randn(1, 2, 5, 5)
    i0, m0 = img.clone(), mask.clone()
    pamr(img, mask, 2, (1,))
    assert torch.equal(img, i0) and torch.equal(mask, m0)


@needs_triton
@pytest.mark.parametrize(
    "bsz,channels,hw,coarse,dilations,iters",
    [(2, 3, (12, 17), None, (8, 16), 10), (1, 5, (9, 7), (4, 3), (1, 2), 3), (1, 1, (5, 40), None, (2,), 1)],
)
def test_triton_kernel_matches_reference(bsz, channels, hw, coarse, dilations, iters):
    image = torch.randn(bsz, 3, *hw)
    logits = torch.randn(bsz, channels, *(coarse or hw))
    before = logits.clone()
    got = pamr_triton(image, logits, iters, dilations)
    ref = pamr(image, logits, iters, dilations)
    assert got.shape == ref.shape == (bsz, channels, *hw)
    torch.testing.assert_close(got, ref, atol=2e-6, rtol=1e-5)  # float32: the same sums, in the same order
    assert torch.equal(logits, before)
    assert pamr_triton(image, logits, 0, dilations) is logits


@needs_triton
def test_triton_kernel_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match="dtype"):
        pamr_triton(torch.randn(1, 3, 4, 4, dtype=torch.float64), torch.randn(1, 2, 4, 4, dtype=torch.float64))


def test_dispatch_takes_the_reference_on_the_cpu_and_refuses_a_forced_kernel():
    from clipsam.kernels import pamr as dispatched

    image, logits = torch.randn(1, 3, 6, 6), torch.randn(1, 2, 6, 6)
    torch.testing.assert_close(dispatched(image, logits, 2, (1,)), pamr(image, logits, 2, (1,)), atol=0, rtol=0)
    with pytest.raises(BackendUnavailableError, match="pamr"):
        dispatched(image, logits, 2, (1,), force=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not HAS_TRITON, reason="needs a CUDA GPU")
def test_gpu_kernel_matches_reference():
    image = torch.randn(2, 3, 224, 224, device="cuda")
    logits = torch.randn(2, 150, 14, 14, device="cuda")
    got = pamr_triton(image, logits, 10, (8, 16))
    torch.testing.assert_close(got, pamr(image, logits, 10, (8, 16)), atol=1e-5, rtol=1e-5)
