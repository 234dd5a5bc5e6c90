"""The fused SFR first pass (``clipsam.ops.first_pass.FirstPass``) against its reference composition, bit for bit.

Inputs are built so that every branch decides something: planted per-patch winners with noise (several labels per
crop), thresholds that send some pixels to label 0 and not others, crops whose size leaves rows and columns beyond
the last whole patch, more queries than one softmax row block holds, PAMR on and off, and one buffer reused across
calls of different sizes and from two threads at once.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from clipsam.ops.first_pass import FirstPass, first_pass_labels_ref


def _inputs(seed: int, b: int, q: int, grid: tuple[int, int], hw: tuple[int, int], margin: float = 0.05):
    rng = np.random.default_rng(seed)
    first = (margin * rng.standard_normal((b, q, *grid))).astype(np.float32)
    winners = rng.integers(0, q, (b, *grid))
    np.put_along_axis(first, winners[:, None], 0.08, axis=1)
    crops = rng.standard_normal((b, 3, *hw)).astype(np.float32)
    return first, crops


@pytest.mark.parametrize(
    "b,q,grid,hw,patch",
    [
        (2, 6, (3, 4), (48, 64), 16),
        (1, 300, (4, 5), (70, 83), 16),  # 300 queries: several row blocks; 6 and 3 leftover rows and columns
        (3, 2, (2, 2), (28, 28), 14),
    ],
)
@pytest.mark.parametrize("iters", [0, 10])
def test_equals_the_reference(b, q, grid, hw, patch, iters):
    first, crops = _inputs(0, b, q, grid, hw)
    fused = FirstPass()
    kinds = set()
    for thd in (0.0, 0.06, 0.5):
        want = first_pass_labels_ref(first, crops, patch, 40.0, thd, iters, (8, 16))
        got = fused(first, crops, patch, 40.0, thd, iters, (8, 16))
        assert got.dtype == np.int64 and got.shape == (b, hw[0] // patch, hw[1] // patch)
        np.testing.assert_array_equal(got, want)
        kinds.add(len(np.unique(got)))
    assert max(kinds) > 1  # not degenerate


def test_buffer_reused_across_sizes_and_threads():
    fused = FirstPass()
    cases = [_inputs(s, 1, q, g, hw) + (g,) for s, q, g, hw in ((1, 50, (3, 3), (48, 48)), (2, 9, (4, 6), (64, 96)))]
    wants = [first_pass_labels_ref(f, c, 16, 40.0, 0.06, 10, (8, 16)) for f, c, _ in cases]
    for _ in range(2):  # large, small, large: the buffer shrinks only in view
        for (f, c, _), want in zip(cases + cases[:1], wants + wants[:1]):
            np.testing.assert_array_equal(fused(f, c, 16, 40.0, 0.06, 10, (8, 16)), want)
    results: dict = {}

    def worker(i):
        f, c, _ = cases[i % 2]
        results[i] = all(np.array_equal(fused(f, c, 16, 40.0, 0.06, 10, (8, 16)), wants[i % 2]) for _ in range(3))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: True for i in range(4)}
