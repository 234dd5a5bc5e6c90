"""ResCLIP's SFR host steps in numpy (``docs/algorithms.md``, ResCLIP SFR), torch-free.

    L       = per-patch mode of the thresholded argmax query                      patch_labels
    S_hat   = class-consistency matrix of L (path check, decay, blur, ReLU, row
              normalisation, CLS row/col 0, / global max, fp16)                  sfr_affinity
    term    = float32(fp16(lambda_sfr * S_hat))    what the second pass adds     sfr_term

The same float32 arithmetic as ``clipsam.dense.ops.patch_labels`` and ``clipsam.kernels.sfr_affinity_ref``. The
path check rounds ``start*(1-t) + end*t`` half to even, so its sample points depend on the exact float32 values
of ``t = torch.linspace(0, 1, D+1)``; torch computes those with a vectorised formula that depends on the CPU,
so the exporter stores torch's own values for every D the engine serves (``LinspaceTable``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import EngineLimitError
from ..postprocess import thresholded_argmax
from .resize import linspace_f32
from .threads import parallel_blocks

_F = np.float32
_CHUNK_ELEMENTS = 1 << 22  # pairs x steps per path-check chunk


class LinspaceTable:
    """torch.linspace(0, 1, D + 1) float32 values for D = 1..max_d, as computed by the exporting torch.

    Arguments:
        flat: all tables concatenated (D = 1, 2, ...), float32.
        offsets: start of table D at ``offsets[D - 1]`` (length max_d + 1, last entry = len(flat)).
    """

    def __init__(self, flat: np.ndarray | None = None, offsets: np.ndarray | None = None):
        self.flat = None if flat is None else np.asarray(flat, dtype=_F)
        self.offsets = None if offsets is None else np.asarray(offsets, dtype=np.int64)

    @property
    def max_d(self) -> int:
        return 0 if self.offsets is None else len(self.offsets) - 1

    def __call__(self, d: int) -> np.ndarray:
        if self.flat is None or self.offsets is None:  # no table: torch's scalar formula (exact for short tables only)
            return linspace_f32(0.0, 1.0, d + 1)
        if not 1 <= d <= self.max_d:
            raise EngineLimitError(
                f"SFR needs torch.linspace(0, 1, {d + 1}) for a patch grid of side {d + 1}, but the engine folder "
                f"holds tables up to side {self.max_d + 1}. Re-export with a larger --max-side."
            )
        return self.flat[self.offsets[d - 1] : self.offsets[d]]


def patch_labels(probs: np.ndarray, patch: int, temp_thd: float) -> np.ndarray:
    """(B, Q, H, W) probabilities -> (B, H//p, W//p) int64 per-patch mode query (ties: smallest label)."""
    return patch_mode(thresholded_argmax(probs, temp_thd, axis=1), patch, probs.shape[1])


def patch_mode(pred: np.ndarray, patch: int, num_queries: int) -> np.ndarray:
    """(B, H, W) per-pixel labels in [0, Q) -> (B, H//p, W//p) int64 most frequent label of each whole p x p patch
    (ties: smallest label; rows/columns beyond the last whole patch are dropped)."""
    b, h, w = pred.shape
    q = num_queries
    gh, gw = h // patch, w // patch
    pred = pred[:, : gh * patch, : gw * patch]
    blocks = pred.reshape(b, gh, patch, gw, patch).transpose(0, 1, 3, 2, 4).reshape(b, gh * gw, patch * patch)
    cell = np.arange(b * gh * gw).reshape(b, gh * gw, 1) * q
    counts = np.bincount((cell + blocks).ravel(), minlength=b * gh * gw * q).reshape(b, gh * gw, q)
    return counts.argmax(axis=2).reshape(b, gh, gw)


def path_valid(flat: np.ndarray, h: int, w: int, t: np.ndarray, mode: str) -> np.ndarray:
    """(N, N) bool: whether the sampled straight path from patch i to patch j stays in label ``flat[i]``.

    The compiled kernel (``compiled.path_valid_rows``, rows on the host threads), equal to ``path_valid_ref``.

    Arguments:
        flat: (N,) int64 labels of the h x w grid; t: (D + 1,) float32 torch.linspace(0, 1, D + 1);
        mode: "prefix" (upstream's t_k) or "full" (t_k = k / d_ij).
    """
    from .compiled import path_valid_rows

    flat = np.ascontiguousarray(flat, dtype=np.int64)
    t = np.ascontiguousarray(t, dtype=_F)
    out = np.empty((h * w, h * w), dtype=bool)
    parallel_blocks(lambda a0, a1: path_valid_rows(flat, w, t, mode == "full", out, a0, a1), h * w)
    return out


def path_valid_ref(flat: np.ndarray, h: int, w: int, t: np.ndarray, mode: str) -> np.ndarray:
    """``path_valid`` in vectorised numpy (the reference), in chunks of rows."""
    n, d = h * w, len(t) - 1
    idx = np.arange(n)
    r, c = idx // w, idx % w
    steps = np.maximum(np.abs(r[:, None] - r[None, :]), np.abs(c[:, None] - c[None, :]))
    coords = np.stack((idx // w, idx % w), axis=-1).astype(_F)  # (N, 2), exact in float32
    k = np.arange(d + 1)
    grid = flat.reshape(h, w)
    out = np.empty((n, n), dtype=bool)
    rows = max(1, _CHUNK_ELEMENTS // (n * (d + 1)))
    end = coords[None, :, None, :]
    for a in range(0, n, rows):
        b = min(n, a + rows)
        start = coords[a:b, None, None, :]
        if mode == "prefix":
            tk = t.reshape(1, 1, -1, 1)
        else:  # full segment: t_k = k / d_ij
            dij = np.maximum(steps[a:b, :, None, None], 1).astype(_F)
            tk = np.minimum(k.reshape(1, 1, -1, 1).astype(_F) / dij, _F(1))
        cur = np.round(start * (_F(1) - tk) + end * tk).astype(np.int64)
        vals = grid[cur[..., 0], cur[..., 1]]  # (n', N, D+1)
        ok = (vals == flat[a:b, None, None]) | (k.reshape(1, 1, -1) > steps[a:b, :, None])
        out[a:b] = ok.all(axis=-1)
    return out


def _gaussian_kernel(n: int, std: float) -> np.ndarray:
    size = min(n, int(6 * std + 1))
    size = size if size % 2 == 1 else size + 1
    x = np.arange(size) - size // 2
    kernel = np.exp((-(x**2)).astype(_F) / _F(2 * std**2))
    return (kernel / kernel.sum(dtype=_F)).astype(_F)


def _blur_1d(s: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Zero-padded correlation of ``s`` with ``kernel`` along ``axis`` (what conv1d/conv2d do)."""
    pad = len(kernel) // 2
    s = np.moveaxis(s, axis, -1)
    padded = np.pad(s, [(0, 0)] * (s.ndim - 1) + [(pad, pad)])
    m = s.shape[-1]
    out = padded[..., 0:m] * kernel[0]
    for j in range(1, len(kernel)):
        out += padded[..., j : j + m] * kernel[j]
    return np.moveaxis(out, -1, axis)


def _one(labels: np.ndarray, std: float, path_check: str, blur: str, table: Callable[[int], np.ndarray]) -> np.ndarray:
    h, w = labels.shape
    n = h * w
    flat = labels.reshape(-1)
    s = (flat[:, None] == flat[None, :]).astype(_F)
    np.fill_diagonal(s, 1.0)
    if path_check != "none":
        idx = np.arange(n)
        r, c = idx // w, idx % w
        steps = np.maximum(np.abs(r[:, None] - r[None, :]), np.abs(c[:, None] - c[None, :]))
        d = int(steps.max())
        if d > 0:
            valid = path_valid(flat, h, w, table(d), path_check)
            s = np.where(valid, s, s * np.exp((-steps).astype(_F) / _F(d)))
    kernel = _gaussian_kernel(n, std)
    if blur == "raster":
        s = _blur_1d(s, kernel, axis=1)
    else:
        img = _blur_1d(s.reshape(n, h, w), kernel, axis=2)
        s = _blur_1d(img, kernel, axis=1).reshape(n, n)
    s = np.maximum(s, 0)
    s = s / (s.sum(axis=1, keepdims=True) + _F(1e-8))
    full = np.zeros((n + 1, n + 1), dtype=_F)
    full[1:, 1:] = s
    return (full / full.max()).astype(np.float16)


def sfr_affinity(
    labels: np.ndarray,
    gaussian_std: float = 5.0,
    path_check: str = "prefix",
    blur: str = "raster",
    table: Callable[[int], np.ndarray] | None = None,
) -> np.ndarray:
    """S_hat for (B, h, w) patch labels: (B, 1 + h*w, 1 + h*w) float16, CLS row/col 0, global max 1 per window."""
    if labels.ndim != 3:
        raise ValueError(f"labels must be (B, h, w), got shape {labels.shape}")
    table = table or LinspaceTable()
    return np.stack(
        [_one(labels[b].astype(np.int64), gaussian_std, path_check, blur, table) for b in range(labels.shape[0])]
    )


def sfr_term(s_hat: np.ndarray, lam: float) -> np.ndarray:
    """``(lam * S_hat)`` computed as torch does for an fp16 tensor (float32 math, fp16 result), as float32."""
    return (s_hat.astype(_F) * _F(lam)).astype(np.float16).astype(_F)
