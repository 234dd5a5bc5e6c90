"""PAMR in numpy (``docs/algorithms.md``, PAMR), torch-free; the arithmetic of ``clipsam.kernels.pamr_ref``.

Same algorithm, same float32 arithmetic and neighbour order as the torch reference:

    sigma  = unbiased std over the 9 * len(dilations) samples of each channel (centre once per dilation)
    aff_n  = mean over image channels of  -|I - I_n| / (1e-8 + 0.1 * sigma)
    a      = softmax over the 8 * len(dilations) neighbours
    repeat num_iter times:  M <- sum_n a_n * M_n        (replicate padding, no self term)

``pamr`` runs the iterations in compiled kernels (``compiled_pamr``): blocks of channels go to the host threads
(``threads.parallel_blocks``), and the weights are laid out row-major with rows on 64-byte lines
(``compiled_pamr.pamr_weights``), so the cost grows with channels x pixels x neighbours only. Two layouts per
dilation set, the first the default:

- dilations (8, 16), the methods' default, whose neighbour offsets the kernels hold as constants: blocks of four
  channels, one channel at a time, either iteration by iteration over a pair of whole row-padded planes
  ("sweeps", ``pamr_channels``), or all iterations in one pass over the rows, each 16 rows behind the previous
  ("wavefront", ``pamr_wavefront``), which reads the weights and planes from memory once per block instead of once
  per iteration: 2x the sweeps at 336 x 448 on a 2-vCPU Zen 3 VM, where those outgrow the cache the VM gets,
  and level with them at 224 x 224, where they fit;
- other dilations: channel pairs sharing each load of the weights, in blocks of four or two.

Which is faster depends on the machine, so the first call for a plane size and thread count times both on its
first channels (real work, in alternation) and keeps the faster for the process (``_layout_for``). Neither changes
a result: each channel is computed alone, every product accumulated in the reference's order without fused
multiply-adds, so the result equals ``pamr_ref`` bit for bit (tests/ops/test_pamr.py, tests/ops/test_compiled.py).
``pamr_ref`` is the numpy reference: strided views of one edge-padded copy per dilation and iteration, accumulated
in place a few channels at a time.

The torch reference (``clipsam.kernels.pamr_ref``) accumulates with ``addcmul_``, which fuses the multiply-add on CPUs
with FMA: the two differ by float32 rounding (~1e-6 relative).
"""

from __future__ import annotations

import time

import numpy as np

from .resize import resize_bilinear, softmax
from .threads import host_threads, parallel_blocks

NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


_BLOCK_BYTES = 1 << 21  # mask bytes per channel block (reference)
# The compiled kernel's layouts, (channels per block, kernel), the default first: with dilations (8, 16), one
# channel at a time iteration by iteration ("sweeps") or all iterations in one pass over the rows ("wavefront");
# with others, channels in pairs.
_LAYOUTS_D8_D16 = ((4, "sweeps"), (4, "wavefront"))
_LAYOUTS = ((4, "pairs"), (2, "pairs"))
_MARGIN = 0.95  # the other layout is chosen when it takes less than this share of the default's time
_TUNED_MAX = 256  # plane sizes remembered; beyond that, new sizes use the default untimed
_tuned: dict[tuple[int, int, int, str, int], tuple[int, str]] = {}


def _offsets(dilations) -> np.ndarray:
    """(8 * len(dilations), 2) int64 (row, column) offsets of the neighbours, in the order of the weights."""
    return np.array([(dy * d, dx * d) for d in dilations for dy, dx in NEIGHBOUR_OFFSETS], np.int64)


def _pad_edge(x: np.ndarray, d: int, out: np.ndarray | None = None) -> np.ndarray:
    """Replicate-pad the last two axes by d (what F.pad(mode="replicate") does), into ``out`` when given."""
    h, w = x.shape[-2:]
    if out is None:
        out = np.empty(x.shape[:-2] + (h + 2 * d, w + 2 * d), dtype=x.dtype)
    out[..., d : d + h, d : d + w] = x
    out[..., :d, d : d + w] = x[..., :1, :]
    out[..., d + h :, d : d + w] = x[..., -1:, :]
    out[..., :, :d] = out[..., :, d : d + 1]
    out[..., :, d + w :] = out[..., :, d + w - 1 : d + w]
    return out


def _shifted(padded: np.ndarray, d: int, h: int, w: int):
    for dy, dx in NEIGHBOUR_OFFSETS:
        yield padded[..., d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w]


def _affinity(image: np.ndarray, dilations) -> np.ndarray:
    """``_affinity_ref`` with the neighbour logits in a compiled kernel (rows on the host threads) and the softmax
    over the neighbours in ``softmax.query_softmax`` (numpy's exp): the same numbers bit for bit."""
    from .compiled_pamr import pamr_affinity_rows
    from .softmax import query_softmax

    img = np.ascontiguousarray(image, dtype=np.float32)
    offs = _offsets(dilations)
    out = np.empty((len(offs),) + img.shape[-2:], np.float32)
    parallel_blocks(lambda r0, r1: pamr_affinity_rows(img, offs, out, r0, r1), img.shape[-2])
    return query_softmax(out, 1.0, out=out)  # x * 1 is x: softmax(x) over the neighbours


def _affinity_ref(image: np.ndarray, dilations) -> np.ndarray:
    """(K, H, W) image -> (8*len(dilations), H, W) neighbour weights summing to 1 over axis 0 (numpy reference)."""
    h, w = image.shape[-2:]
    samples: list[np.ndarray] = []
    diffs: list[np.ndarray] = []
    for d in dilations:
        nbs = list(_shifted(_pad_edge(image, d), d, h, w))
        samples.extend(nbs[:4] + [image] + nbs[4:])
        diffs.extend(np.abs(image - nb) for nb in nbs)
    std = np.stack(samples, axis=1).std(axis=1, ddof=1)  # (K, H, W)
    denom = np.float32(1e-8) + np.float32(0.1) * std
    aff = np.stack([-dist / denom for dist in diffs], axis=1)  # (K, P, H, W)
    return softmax(aff.mean(axis=0, dtype=np.float32), axis=0)


def _iterate_ref(a: np.ndarray, mask: np.ndarray, num_iter: int, dilations) -> np.ndarray:
    """(P, H, W) weights, (C, H, W) mask -> the mask after ``num_iter`` iterations (numpy reference)."""
    h, w = mask.shape[-2:]
    out_all = np.empty_like(mask)
    step = max(1, _BLOCK_BYTES // (4 * h * w))
    for c0 in range(0, mask.shape[0], step):
        m = mask[c0 : c0 + step].copy()
        pads = {d: np.empty(m.shape[:-2] + (h + 2 * d, w + 2 * d), dtype=m.dtype) for d in dilations}
        tmp, out = np.empty_like(m), np.empty_like(m)
        for _ in range(num_iter):
            out.fill(0)
            p = 0
            for d in dilations:
                for nb in _shifted(_pad_edge(m, d, pads[d]), d, h, w):
                    np.multiply(a[p], nb, out=tmp)
                    out += tmp
                    p += 1
            m, out = out, m
        out_all[c0 : c0 + step] = m
    return out_all


def _layouts(offs: np.ndarray) -> tuple[tuple[int, str], tuple[int, str]]:
    """The compiled kernel's two layouts for these offsets, (channels per block, kernel): the default first."""
    from .compiled_pamr_sweeps import is_d8_d16

    return _LAYOUTS_D8_D16 if is_d8_d16(offs) else _LAYOUTS


def _run_blocks(
    a: np.ndarray, m: np.ndarray, offs: np.ndarray, num_iter: int, c0: int, c1: int, layout: tuple[int, str]
) -> None:
    """All iterations for channels [c0, c1) of ``m``, split over the host threads, each thread's channels in blocks
    as ``layout`` says (``_LAYOUTS``); ``a``: the weights as ``compiled_pamr.pamr_weights`` lays them out."""
    from .compiled_pamr import pamr_channels, pamr_wavefront

    block, kernel = layout

    def run(s: int, e: int) -> None:
        for b in range(c0 + s, c0 + e, block):
            end = min(c0 + e, b + block)
            if kernel == "wavefront":
                pamr_wavefront(m, a, b, end, num_iter)
            else:
                pamr_channels(m, a, offs, b, end, num_iter, kernel == "sweeps")

    parallel_blocks(run, c1 - c0)


def _layout_for(a: np.ndarray, m: np.ndarray, offs: np.ndarray, num_iter: int) -> tuple[tuple[int, str], int]:
    """The layout for ``m``'s plane size on this machine, and how many of its first channels were already refined
    to find it: the first call for a size (with enough channels) runs a chunk of ``threads x 4`` channels in each
    layout untimed (first touch, and loading or compiling each kernel: tens of milliseconds, as long as a chunk
    takes), then chunks in each layout twice in alternation, timed, and keeps the other layout only when it took
    less than ``_MARGIN`` of the default's time."""
    threads = host_threads()
    default, other = _layouts(offs)
    key = (m.shape[1], m.shape[2], len(offs), default[1], threads)  # the layouts differ by dilations
    layout = _tuned.get(key)
    chunk = threads * max(default[0], other[0])
    if layout is not None or m.shape[0] < 6 * chunk or len(_tuned) >= _TUNED_MAX:
        return layout or default, 0
    _run_blocks(a, m, offs, num_iter, 0, chunk, default)
    _run_blocks(a, m, offs, num_iter, chunk, 2 * chunk, other)
    spent = {default: 0.0, other: 0.0}
    for i, b in enumerate((other, default, other, default), start=2):
        t = time.perf_counter()
        _run_blocks(a, m, offs, num_iter, i * chunk, (i + 1) * chunk, b)
        spent[b] += time.perf_counter() - t
    layout = other if spent[other] < _MARGIN * spent[default] else default
    _tuned[key] = layout
    return layout, 6 * chunk


def _iterate_in_place(a: np.ndarray, m: np.ndarray, num_iter: int, dilations) -> np.ndarray:
    """``_iterate_ref`` in the compiled kernel on ``m`` itself ((C, H, W) C-contiguous float32), blocks of channels
    on the host threads (``_layout_for`` chooses how)."""
    from .compiled_pamr import pamr_weights

    offs = _offsets(dilations)
    a = pamr_weights(np.asarray(a, dtype=np.float32))
    layout, done = _layout_for(a, m, offs, num_iter)
    if done < m.shape[0]:
        _run_blocks(a, m, offs, num_iter, done, m.shape[0], layout)
    return m


def _iterate(a: np.ndarray, mask: np.ndarray, num_iter: int, dilations) -> np.ndarray:
    """``_iterate_ref`` in the compiled kernel, on a copy of ``mask``."""
    return _iterate_in_place(a, np.array(mask, dtype=np.float32, order="C", copy=True), num_iter, dilations)


def pamr_in_place(image: np.ndarray, mask: np.ndarray, num_iter: int, dilations=(8, 16)) -> np.ndarray:
    """``pamr`` of one image on ``mask`` itself (no copy; the caller owns it), already at the image's size.

    Arguments:
        image: (K, H, W) float32 normalised image.
        mask: (C, H, W) C-contiguous float32 logits, replaced by the refined logits.

    Returns:
        ``mask``.
    """
    if mask.dtype != np.float32 or not mask.flags.c_contiguous or mask.shape[-2:] != image.shape[-2:]:
        raise ValueError("pamr_in_place: mask must be C-contiguous float32 at the image's size")
    if num_iter <= 0:
        return mask
    dilations = tuple(dilations)
    return _iterate_in_place(_affinity(np.asarray(image, np.float32), dilations), mask, num_iter, dilations)


def _pamr(image, logits, num_iter: int, dilations, iterate, affinity=_affinity) -> np.ndarray:
    if num_iter <= 0:
        return logits
    image = np.asarray(image, dtype=np.float32)
    if logits.shape[-2:] != image.shape[-2:]:
        logits = resize_bilinear(logits, image.shape[-2:], align_corners=True)
    mask = np.asarray(logits, dtype=np.float32)
    dilations = tuple(dilations)
    return np.stack([iterate(affinity(image[b], dilations), mask[b], num_iter, dilations) for b in range(len(mask))])


def pamr(image: np.ndarray, logits: np.ndarray, num_iter: int = 10, dilations=(8, 16)) -> np.ndarray:
    """Refine ``logits`` with affinities of ``image`` (compiled kernel; equal to ``pamr_ref`` bit for bit).

    Arguments:
        image: (B, K, H, W) float32 normalised image.
        logits: (B, C, H', W') float32; resized to (H, W) bilinearly (align_corners=True) first, as upstream.

    Returns:
        (B, C, H, W) float32 refined logits (``logits`` itself when ``num_iter`` <= 0).
    """
    return _pamr(image, logits, num_iter, dilations, _iterate)


def pamr_ref(image: np.ndarray, logits: np.ndarray, num_iter: int = 10, dilations=(8, 16)) -> np.ndarray:
    """``pamr`` in plain numpy: the reference the compiled kernel is tested against."""
    return _pamr(image, logits, num_iter, dilations, _iterate_ref, _affinity_ref)
