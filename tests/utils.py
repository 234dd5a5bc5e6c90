"""Shared test helpers: the flash-attention "2x rule" for comparing a kernel with its reference, and confident
CLIP-like probabilities of a ground truth (``dense_from_gt``).

A kernel may be at most twice as wrong as PyTorch itself: with ``ref_hi`` the reference computed in a
higher precision (fp64), ``ref`` the same reference in the kernel's dtype, and ``out`` the kernel,

    max|out - ref_hi| <= 2 * max|ref - ref_hi| + atol
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["assert_close_to_ref", "dense_from_gt", "NUM_CLASSES"]

NUM_CLASSES = 21  # PASCAL VOC: background + 20 classes


def dense_from_gt(gt: np.ndarray, seed: int = 0) -> np.ndarray:
    """float32 (21, H, W) probabilities of a confident CLIP map of ``gt``: one-hot * 0.9 + noise."""
    rng = np.random.default_rng(seed)
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[gt].transpose(2, 0, 1)
    return onehot * 0.9 + rng.uniform(0.0, 0.1, onehot.shape).astype(np.float32)


def assert_close_to_ref(
    out: torch.Tensor, ref: torch.Tensor, ref_hi: torch.Tensor, *, atol: float, name: str = "kernel"
) -> None:
    """Assert the 2x rule, with a verbose message (errors, worst element, count over the bound).

    Arguments:
        out: the kernel's output.
        ref: the reference's output in the kernel's dtype.
        ref_hi: the reference's output in higher precision (fp64), the ground truth.
        atol: absolute slack added to the bound.
        name: what ``out`` is, for the message.
    """
    assert out.shape == ref_hi.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref_hi.shape)}"
    hi = ref_hi.detach().double().cpu()
    got = out.detach().double().cpu()
    pt = ref.detach().double().cpu()
    assert torch.isfinite(got).all() or not torch.isfinite(hi).all(), (
        f"{name}: non-finite values where the reference is finite"
    )
    err = (got - hi).abs()
    err_pt = (pt - hi).abs()
    bound = 2 * err_pt.max().item() + atol
    worst = err.max().item()
    if worst <= bound:
        return
    idx = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
    over = int((err > bound).sum())
    raise AssertionError(
        f"{name} error vs fp64 {worst:.3e} > 2 * reference error {err_pt.max().item():.3e} + atol {atol:.1e} = {bound:.3e}\n"
        f"  worst at {idx}: {name} {got[idx].item():.6g}, same-dtype reference {pt[idx].item():.6g}, fp64 {hi[idx].item():.6g}\n"
        f"  {over} of {err.numel()} elements over the bound; mean |error| {name} {err.mean().item():.3e}, reference {err_pt.mean().item():.3e}"
    )
