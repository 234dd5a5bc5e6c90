"""PAMR against a direct per-pixel loop implementation of docs/algorithms.md section 7."""

from __future__ import annotations

import math

import torch

from clipsam.dense.pamr import NEIGHBOUR_OFFSETS, pamr


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
