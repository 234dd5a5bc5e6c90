"""Encoding: windows through the backend, upsampled to the window and stitched back into each member.

Per window of h x w pixels (ClearCLIP first zero-pads it to a patch multiple):

    patch logits (B, Q, h/p, w/p) = backend.patch_logits(crops, text)     (SFR inside, ``clipsam.ops.base``)
    window logits = bilinear resize to (h, w) (the padding cropped off)
    member logits = sum of the window logits over the windows covering a pixel / their count

One-step whole-image inference (SCLIP) keeps the patch grid; finalisation resizes it to the original size.
A method with per-member inputs (``Member.maps`` cropped per window, ``Member.context`` whole; RF-CLIP, CorrCLIP)
gets them as keyword arguments of ``patch_logits``, stacked like the crops; a backend with ``member_context(pixels)``
computes each member's context first.
``run_members`` batches windows of equal shape across members and images; ``infer_logits`` is the reference path,
one window at a time, which the batched path equals.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..config import DenseConfig
from .deferred import Upsampled
from .plan import Member, window_tasks
from .windows import pad_to_patch, window_grid


def window_logits(
    backend,
    crops: Any,
    text: Any,
    pads: tuple[int, int, int, int],
    maps: dict | None = None,
    context: dict | None = None,
) -> Any:
    """Logits of equally sized crops (B, 3, h, w), upsampled to the crop size: (B, Q, h, w) float32.

    Arguments:
        backend: a ``clipsam.pipeline.DenseBackend``.
        pads: (left, right, top, bottom) zero padding of each crop before encoding (ClearCLIP, CorrCLIP), or zeros.
        maps: per-window maps (B, h, w) of the method by name (padded with -1 like the crops), or None.
        context: per-window inputs of the method by name (B, ...), or None.
    """
    h, w = crops.shape[-2:]
    left, _, top, _ = pads
    grid, size = _padded_patch_logits(backend, crops, text, pads, maps, context)
    resize = getattr(backend, "resize_window_logits", backend.ops.resize)  # fp16-upstream: in fp16, as upstream
    out = resize(grid, size)
    return out[:, :, top : top + h, left : left + w] if size != (h, w) else out


def _padded_patch_logits(
    backend, crops: Any, text: Any, pads: tuple[int, int, int, int], maps: dict | None, context: dict | None
) -> tuple[Any, tuple[int, int]]:
    """The patch logits (B, Q, h', w') of the crops zero-padded by ``pads``, and the padded size (H', W')."""
    ops = backend.ops
    left, right, top, bottom = pads
    padded = left or right or top or bottom
    extras = dict(context or {})
    for name, m in (maps or {}).items():
        extras[name] = ops.pad(m[:, None] + 1.0, pads)[:, 0] - 1.0 if padded else m
    if padded:
        crops = ops.pad(crops, pads)
    return backend.patch_logits(crops, text, **extras), (int(crops.shape[-2]), int(crops.shape[-1]))


def _pads(cfg: DenseConfig, hw: tuple[int, int], patch: int) -> tuple[int, int, int, int]:
    sc = cfg.schedule
    return pad_to_patch(hw[0], hw[1], sc.pad_multiple or patch) if sc.pad_crops and sc.slide_crop > 0 else (0, 0, 0, 0)


def _side_inputs(ops, members: list[Member], chunk: list) -> tuple[dict, dict]:
    """The maps (cropped to each window) and contexts of a chunk's members, stacked like the crops."""
    first = members[chunk[0][0]]
    maps = {
        k: ops.stack([members[mi].maps[k][y1:y2, x1:x2] for mi, (y1, y2, x1, x2) in chunk]) for k in (first.maps or {})
    }
    context = {k: ops.stack([members[mi].context[k] for mi, _ in chunk]) for k in (first.context or {})}
    return maps, context


def _member_context(backend, members: list[Member]) -> None:
    """``Member.context`` from the backend's ``member_context(pixels)`` (methods that look at the whole member)."""
    make = getattr(backend, "member_context", None)
    if make is not None:
        for m in members:
            m.context = make(m.pixels)


def run_members(
    backend, members: list[Member], text: Any, cfg: DenseConfig, max_batch: int, progress=None
) -> list[Member]:
    """Run every window of every member in shape-bucketed batches and stitch the logits.

    Arguments:
        backend: ``DenseBackend``.
        members: from ``plan_members``; their ``logits`` are filled in.
        text: (Q, E) unit query embeddings (the backend's array type).
        max_batch: most windows per encoder call.
        progress: optional tqdm-like object; ``update(n)`` is called with the windows done.

    Returns:
        the members, with ``logits`` (Q, h, w) float32, flips undone ((Q, gh, gw) for one-step whole image; an
        ``Upsampled`` grid for two-step whole image where the backend's ops have ``resize_twice``).
    """
    ops, sc = backend.ops, cfg.schedule
    q = text.shape[0]
    one_step = sc.slide_crop == 0 and sc.upsample == "one_step"
    # whole image, two steps: keep the grid, upsampled where finalisation reads it (not with upstream's fp16 resize)
    defer = add = None
    if not getattr(backend, "fp16_windows", False):
        if sc.slide_crop == 0 and not one_step:
            defer = getattr(ops, "resize_twice", None)
        # sliding: each window's logits resized straight into the sum, never a (B, Q, h, w) batch of them
        add = getattr(ops, "resize_add", None) if sc.slide_crop > 0 else None
    acc = {}
    if sc.slide_crop > 0:
        for mi, m in enumerate(members):
            h, w = m.pixels.shape[-2:]
            acc[mi] = (ops.zeros((q, h, w), m.pixels), ops.zeros((1, h, w), m.pixels))
    _member_context(backend, members)
    for shape, tasks in window_tasks(members, cfg).items():
        pads = _pads(cfg, shape, backend.spec.patch)
        for b0 in range(0, len(tasks), max_batch):
            chunk = tasks[b0 : b0 + max_batch]
            crops = ops.stack([members[mi].pixels[:, y1:y2, x1:x2] for mi, (y1, y2, x1, x2) in chunk])
            maps, context = _side_inputs(ops, members, chunk)
            if one_step or defer is not None:
                out = backend.patch_logits(crops, text, **maps, **context)
            elif add is not None:
                out, size = _padded_patch_logits(backend, crops, text, pads, maps, context)
            else:
                out = window_logits(backend, crops, text, pads, maps, context)
            for k, (mi, (y1, y2, x1, x2)) in enumerate(chunk):
                if add is not None:
                    add(out[k], size, acc[mi][0], (y1, x1), (pads[2], pads[0], y2 - y1, x2 - x1))
                    acc[mi][1][:, y1:y2, x1:x2] += 1
                elif sc.slide_crop > 0:
                    acc[mi][0][:, y1:y2, x1:x2] += out[k]
                    acc[mi][1][:, y1:y2, x1:x2] += 1
                elif defer is not None:
                    members[mi].logits = Upsampled(out[k], (y2 - y1, x2 - x1), False, defer)
                else:
                    members[mi].logits = out[k]
            if progress is not None:
                progress.update(len(chunk))
    for mi, m in enumerate(members):
        if sc.slide_crop > 0:  # the mean over windows, in the sum's own buffer (no second queries x pixels array)
            total, count = acc[mi]
            total /= count
            m.logits = total
        if m.flip:
            m.logits = replace(m.logits, flip=True) if isinstance(m.logits, Upsampled) else ops.flip_w(m.logits)
    return members


def infer_logits(
    backend, image: Any, text: Any, cfg: DenseConfig, ori_hw: tuple[int, int], maps: dict | None = None
) -> Any:
    """Logits of one preprocessed image at its original size, one window at a time (the reference path).

    Arguments:
        image: (3, h, w) normalised image at the resized size (the backend's array type).
        text: (Q, E) query embeddings.
        ori_hw: (H0, W0) original image size.
        maps: the method's (h, w) maps aligned with ``image`` (``Member.maps``), or None.

    Returns:
        (Q, H0, W0) float32 logits (after the optional output PAMR).
    """
    ops, sc, post = backend.ops, cfg.schedule, cfg.post
    img = image[None]
    h, w = img.shape[-2:]
    member = Member(0, 1.0, False, 1.0, image, maps=maps)
    _member_context(backend, [member])
    context = {k: v[None] for k, v in (member.context or {}).items()}

    def crop(y1, y2, x1, x2):
        return {k: v[None, y1:y2, x1:x2] for k, v in (maps or {}).items()}

    if sc.slide_crop > 0:
        preds = ops.zeros((1, text.shape[0], h, w), img)
        count = ops.zeros((1, 1, h, w), img)
        for y1, y2, x1, x2 in window_grid(h, w, sc.slide_crop, sc.slide_stride):
            pads = _pads(cfg, (y2 - y1, x2 - x1), backend.spec.patch)
            preds[:, :, y1:y2, x1:x2] += window_logits(
                backend, img[:, :, y1:y2, x1:x2], text, pads, crop(y1, y2, x1, x2), context
            )
            count[:, :, y1:y2, x1:x2] += 1
        logits = preds / count
    elif sc.upsample == "one_step":
        logits = backend.patch_logits(img, text, **crop(0, h, 0, w), **context)
    else:
        logits = window_logits(backend, img, text, (0, 0, 0, 0), crop(0, h, 0, w), context)
    logits = getattr(backend, "resize_final_logits", ops.resize)(logits, ori_hw)
    if post.pamr_iters > 0:
        logits = ops.pamr(ops.resize(img, ori_hw), logits, post.pamr_iters, post.pamr_dilations)
    rounding = getattr(backend, "round_final_logits", None)  # fp16 where upstream keeps them so (fp16-upstream)
    return (logits if rounding is None else rounding(logits))[0]
