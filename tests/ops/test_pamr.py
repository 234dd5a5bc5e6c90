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


@pytest.mark.parametrize("dilations", [(8, 16), (1,)])
@pytest.mark.parametrize("threads", ["1", "2"])
def test_every_layout_and_the_timed_first_call_equal_the_reference(monkeypatch, dilations, threads):
    """Both layouts of the dilations (dilations (8, 16): sweeps and wavefront; others: pairs in blocks of 4 and 2),
    and the first call of a plane size, which refines its first channels in both while timing them: the same
    numbers as the numpy reference, bit for bit, channels past the timed ones too."""
    monkeypatch.setenv("CLIPSAM_HOST_THREADS", threads)
    monkeypatch.setattr(npamr, "_tuned", {})
    rng = np.random.default_rng(7)
    img = rng.standard_normal((3, 30, 37)).astype(np.float32)
    mask = rng.standard_normal((6 * int(threads) * 4 + 3, 30, 37)).astype(np.float32)  # past the timed chunks
    a = npamr._affinity(img, dilations)
    want = npamr._iterate_ref(a, mask, 4, dilations)
    got = npamr._iterate(a, mask, 4, dilations)  # the first call: timed
    layouts = npamr._layouts(npamr._offsets(dilations))
    assert layouts == (npamr._LAYOUTS_D8_D16 if dilations == (8, 16) else npamr._LAYOUTS)
    assert list(npamr._tuned) == [(30, 37, 8 * len(dilations), layouts[0][1], int(threads))]
    np.testing.assert_array_equal(got, want)
    for layout in layouts:
        monkeypatch.setattr(npamr, "_tuned", {key: layout for key in npamr._tuned})
        np.testing.assert_array_equal(npamr._iterate(a, mask, 4, dilations), want)


def test_dilations_8_16_and_others_with_16_neighbours_are_tuned_apart(monkeypatch):
    """(1, 2) has as many neighbours as (8, 16) but cannot run the wavefront kernel: a plane size tuned for one is
    tuned again for the other, and each gives the reference's numbers."""
    monkeypatch.setenv("CLIPSAM_HOST_THREADS", "2")
    monkeypatch.setattr(npamr, "_tuned", {})
    rng = np.random.default_rng(8)
    img = rng.standard_normal((3, 24, 30)).astype(np.float32)
    mask = rng.standard_normal((51, 24, 30)).astype(np.float32)
    for dilations in ((8, 16), (1, 2)):
        a = npamr._affinity(img, dilations)
        default, other = npamr._layouts(npamr._offsets(dilations))
        np.testing.assert_array_equal(npamr._iterate(a, mask, 3, dilations), npamr._iterate_ref(a, mask, 3, dilations))
        key = (24, 30, 16, default[1], 2)
        assert key in npamr._tuned
        monkeypatch.setitem(npamr._tuned, key, other)
    assert len(npamr._tuned) == 2 and set(npamr._tuned.values()) == {(4, "wavefront"), (2, "pairs")}
    for dilations in ((8, 16), (1, 2)):
        a = npamr._affinity(img, dilations)
        np.testing.assert_array_equal(npamr._iterate(a, mask, 3, dilations), npamr._iterate_ref(a, mask, 3, dilations))


@pytest.mark.parametrize("slow_block, chosen", [(4, 2), (2, 4), (None, 4)])
def test_the_first_call_keeps_the_faster_layout(monkeypatch, slow_block, chosen):
    """The timed chunks decide (here made slow on purpose); a tie keeps the default; later calls and calls with too
    few channels to time run without timing."""
    import time

    monkeypatch.setenv("CLIPSAM_HOST_THREADS", "2")
    monkeypatch.setattr(npamr, "_tuned", {})
    real, calls = npamr._run_blocks, []

    def run_blocks(a, m, offs, num_iter, c0, c1, layout):
        block, kernel = layout
        assert kernel == "pairs"
        calls.append((c0, c1, block))
        time.sleep(0.03 if block == slow_block else 0.01)
        real(a, m, offs, num_iter, c0, c1, layout)

    monkeypatch.setattr(npamr, "_run_blocks", run_blocks)
    rng = np.random.default_rng(3)
    img = rng.standard_normal((3, 12, 20)).astype(np.float32)
    a = npamr._affinity(img, (1,))
    small = rng.standard_normal((47, 12, 20)).astype(np.float32)  # fewer than 6 chunks of 2 threads x 4
    npamr._iterate(a, small, 2, (1,))
    assert calls == [(0, 47, 4)] and npamr._tuned == {}
    calls.clear()
    mask = rng.standard_normal((50, 12, 20)).astype(np.float32)
    npamr._iterate(a, mask, 2, (1,))
    assert calls == [(0, 8, 4), (8, 16, 2), (16, 24, 2), (24, 32, 4), (32, 40, 2), (40, 48, 4), (48, 50, chosen)]
    assert npamr._tuned == {(12, 20, 8, "pairs", 2): (chosen, "pairs")}
    calls.clear()
    npamr._iterate(a, mask, 2, (1,))
    assert calls == [(0, 50, chosen)]
