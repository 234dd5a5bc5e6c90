"""ResCLIP's SFR class-consistency matrix S_hat from a grid of patch labels (``docs/algorithms.md`` section 9).

For an h x w grid of labels L (N = h*w patches, raster order):

    S_ij  = [L_i == L_j], S_ii = 1
    d_ij  = Chebyshev distance, D = max d_ij
    path  : samples p_k = round(i*(1 - t_k) + j*t_k), t_k = k/D, k = 0..d_ij (float32, half-to-even);
            valid when every sampled label equals L_i. Upstream steps t by 1/D, not 1/d_ij, so only the
            first d_ij/D of the segment is checked ("prefix", the reference default); "full" checks it all.
    decay : S_ij <- S_ij * exp(-d_ij / D) where the path is invalid
    blur  : each row convolved along the raster index with a normalised 1-D Gaussian (std, size
            min(N, int(6 std + 1)) made odd, zero padding) -- this wraps across grid rows ("raster", the
            reference default); "2d" blurs each row as an h x w image with the same kernel instead.
    ReLU, row normalisation (/ (sum + 1e-8)), embedding in (1+N)^2 with zero CLS row/column,
    division by the global max, cast to fp16.

The reference is vectorised over patch pairs; the path check is chunked over start patches so its
(pairs x steps) index tensor stays within a fixed memory bound.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
import torch.nn.functional as F

PATH_CHECKS = ("prefix", "full", "none")
BLURS = ("raster", "2d")
_CHUNK_ELEMENTS = 1 << 22  # pairs x steps per path-check chunk (~64 MiB of int64 coordinates)


def _gaussian_kernel(n: int, std: float, device) -> torch.Tensor:
    size = min(n, int(6 * std + 1))
    size = size if size % 2 == 1 else size + 1
    x = torch.arange(size, device=device) - size // 2
    kernel = torch.exp(-(x**2) / (2 * std**2))
    return kernel / kernel.sum()


def _path_valid(labels: torch.Tensor, h: int, w: int, max_steps: int, mode: str) -> torch.Tensor:
    """(N, N) bool: whether the straight path from patch i to patch j stays inside L_i."""
    n = h * w
    idx = torch.arange(n, device=labels.device)
    coords = torch.stack((idx // w, idx % w), dim=-1)  # (N, 2) row, col
    steps = (coords[:, None, :] - coords[None, :, :]).abs().amax(-1)  # (N, N) Chebyshev
    t = torch.linspace(0, 1, steps=max_steps + 1, device=labels.device).view(1, 1, -1, 1)  # (1, 1, D+1, 1)
    k = torch.arange(max_steps + 1, device=labels.device)
    grid = labels.view(h, w)
    out = torch.empty(n, n, dtype=torch.bool, device=labels.device)
    rows = max(1, _CHUNK_ELEMENTS // (n * (max_steps + 1)))
    end = coords[None, :, None, :]  # (1, N, 1, 2)
    for a in range(0, n, rows):
        b = min(n, a + rows)
        start = coords[a:b, None, None, :]  # (n', 1, 1, 2)
        if mode == "prefix":
            cur = (start * (1 - t) + end * t).round().long()  # (n', N, D+1, 2)
            in_path = k.view(1, 1, -1) <= steps[a:b, :, None]
        else:  # full segment: t_k = k / d_ij
            d = steps[a:b, :, None, None].clamp(min=1).float()
            tk = (k.view(1, 1, -1, 1).float() / d).clamp(max=1.0)
            cur = (start * (1 - tk) + end * tk).round().long()
            in_path = k.view(1, 1, -1) <= steps[a:b, :, None]
        vals = grid[cur[..., 0], cur[..., 1]]  # (n', N, D+1)
        same = vals == labels[a:b, None, None]
        out[a:b] = (same | ~in_path).all(dim=-1)
    return out


def _one(labels: torch.Tensor, std: float, path_check: str, blur: str) -> torch.Tensor:
    h, w = labels.shape
    n = h * w
    flat = labels.reshape(-1)
    s = (flat[:, None] == flat[None, :]).float()
    s.fill_diagonal_(1.0)
    if path_check != "none":
        idx = torch.arange(n, device=labels.device)
        coords = torch.stack((idx // w, idx % w), dim=-1)
        steps = (coords[:, None, :] - coords[None, :, :]).abs().amax(-1)
        max_steps = int(steps.max().item())
        if max_steps > 0:
            valid = _path_valid(flat, h, w, max_steps, path_check)
            s = torch.where(valid, s, s * torch.exp(-steps / max_steps))
    kernel = _gaussian_kernel(n, std, labels.device)
    pad = kernel.numel() // 2
    if blur == "raster":
        s = F.conv1d(s.unsqueeze(1), kernel.view(1, 1, -1), padding=pad).squeeze(1)
    else:
        img = s.view(n, 1, h, w)
        img = F.conv2d(F.pad(img, (pad, pad, 0, 0)), kernel.view(1, 1, 1, -1))
        img = F.conv2d(F.pad(img, (0, 0, pad, pad)), kernel.view(1, 1, -1, 1))
        s = img.reshape(n, n)
    s = F.relu(s)
    s = s / (s.sum(dim=1, keepdim=True) + 1e-8)
    full = torch.zeros(n + 1, n + 1, device=labels.device, dtype=torch.float32)
    full[1:, 1:] = s
    return (full / full.max()).to(torch.float16)


def sfr_affinity_ref(
    labels: torch.Tensor,
    *,
    gaussian_std: float = 5.0,
    path_check: str = "prefix",
    blur: str = "raster",
) -> torch.Tensor:
    """S_hat for a batch of patch-label grids.

    Arguments:
        labels: (B, h, w) int64 patch labels (query indices).
        gaussian_std: std of the 1-D blur, in patches.
        path_check: "prefix" (upstream), "full" (whole segment checked) or "none" (no decay).
        blur: "raster" (upstream, along the flattened index) or "2d" (within the grid, no row wrap).

    Returns:
        (B, 1 + h*w, 1 + h*w) fp16 tensor, CLS row and column zero, global max 1 per window.
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B, h, w), got shape {tuple(labels.shape)}")
    if path_check not in PATH_CHECKS:
        raise ValueError(f"path_check must be one of {PATH_CHECKS}, got {path_check!r}")
    if blur not in BLURS:
        raise ValueError(f"blur must be one of {BLURS}, got {blur!r}")
    labels = labels.long()
    return torch.stack([_one(labels[b], gaussian_std, path_check, blur) for b in range(labels.shape[0])])


# ------------------------------------------------------------------------------------------------------
# Triton kernels (path_check "prefix" or "none", blur "raster")
#
#   1. _sfr_path_kernel      per (i, j) tile: same label, path check -> code (B, N, N) int8:
#                            0 (S = 0), 1 (S = 1), 2 (S = exp(-d_ij / D), path invalid)
#   2. _sfr_rowstat_kernel   per row block: raster blur of the decoded row (zero padding) + ReLU,
#                            row sum + 1e-8 and row maximum of the normalised row -> (B, N) each
#   3. _sfr_finalize_kernel  per (1+N)^2 tile: blur again, / row sum, / global max, fp16, CLS row/col 0
#
# The path check keeps the reference's float32 arithmetic exactly: sample positions
# round(start*(1-t_k) + end*t_k) with t_k from the same torch.linspace, no FMA contraction
# (enable_fp_fusion=False) and half-to-even rounding; the decay factors and blur weights come from the
# same torch expressions as the reference. Only summation order differs (blur taps, row sums), so results
# agree to fp32 rounding before the fp16 cast. Device memory: one int8 N x N code matrix per window
# (the blur is recomputed rather than stored: 31 taps of cached int8 loads cost less than an fp32 pass),
# where the reference moves (pairs x steps x 2) int64 index tensors and several fp32 N x N matrices.
# ------------------------------------------------------------------------------------------------------

from ._dispatch import HAS_TRITON, custom_op, dispatch, jit_launcher, runs_interpreted, tl, triton  # noqa: E402

FUSED_PATH_CHECKS = ("prefix", "none")
FUSED_BLURS = ("raster",)

if HAS_TRITON:

    @triton.jit
    def _sfr_path_kernel(
        LAB,
        TV,
        CODE,
        N,
        GRID_W,
        D,
        stride_lb,
        stride_cb,
        CHECK_PATH: tl.constexpr,
        BLOCK_I: tl.constexpr,
        BLOCK_J: tl.constexpr,
    ):
        pid_b = tl.program_id(2).to(tl.int64)
        offs_i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
        offs_j = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
        mask_i = offs_i < N
        mask_j = offs_j < N
        mask = mask_i[:, None] & mask_j[None, :]
        lab = LAB + pid_b * stride_lb
        li = tl.load(lab + offs_i, mask=mask_i, other=-1)
        lj = tl.load(lab + offs_j, mask=mask_j, other=-2)
        code = (li[:, None] == lj[None, :]).to(tl.int8)
        if CHECK_PATH:
            ri = offs_i // GRID_W
            ci = offs_i - ri * GRID_W
            rj = offs_j // GRID_W
            cj = offs_j - rj * GRID_W
            steps = tl.maximum(tl.abs(ri[:, None] - rj[None, :]), tl.abs(ci[:, None] - cj[None, :]))
            sr = ri.to(tl.float32)[:, None]
            sc = ci.to(tl.float32)[:, None]
            er = rj.to(tl.float32)[None, :]
            ec = cj.to(tl.float32)[None, :]
            valid = mask
            for k in range(0, D + 1):
                t = tl.load(TV + k)
                omt = 1.0 - t
                # torch.round (half to even) of a value in [0, 2^22): (x + 2^23) - 2^23
                pr = ((sr * omt + er * t) + 8388608.0) - 8388608.0
                pc = ((sc * omt + ec * t) + 8388608.0) - 8388608.0
                lp = tl.load(lab + pr.to(tl.int32) * GRID_W + pc.to(tl.int32), mask=mask, other=0)
                valid = valid & ((lp == li[:, None]) | (k > steps))
            code = tl.where(valid | (code == 0), code, 2)
        tl.store(CODE + pid_b * stride_cb + offs_i[:, None] * N + offs_j[None, :], code.to(tl.int8), mask=mask)

    @triton.jit
    def _sfr_blur_tile(
        code_rows,
        row_i,
        col_i,
        mask_i,
        offs_j,
        KW,
        DECAY,
        N,
        GRID_W,
        KSIZE,
        PAD,
        BLOCK_I: tl.constexpr,
        BLOCK_J: tl.constexpr,
    ):
        # ReLU(sum_tap KW[tap] * S[i, j + tap - PAD]) for a (BLOCK_I, BLOCK_J) tile, S decoded from codes.
        acc = tl.zeros([BLOCK_I, BLOCK_J], tl.float32)
        for tap in range(0, KSIZE):
            src = offs_j + (tap - PAD)
            m = mask_i[:, None] & ((src >= 0) & (src < N))[None, :]
            c = tl.load(code_rows + src[None, :], mask=m, other=0)
            row_j = src // GRID_W
            steps = tl.maximum(
                tl.abs(row_i[:, None] - row_j[None, :]), tl.abs(col_i[:, None] - (src - row_j * GRID_W)[None, :])
            )
            dec = tl.load(DECAY + steps, mask=m & (c == 2), other=0.0)
            s = tl.where(c == 1, 1.0, dec)
            acc += tl.load(KW + tap) * s
        return tl.maximum(acc, 0.0)

    @triton.jit
    def _sfr_rowstat_kernel(
        CODE,
        KW,
        DECAY,
        RSUM,
        RMAX,
        N,
        GRID_W,
        KSIZE,
        PAD,
        stride_cb,
        BLOCK_I: tl.constexpr,
        BLOCK_J: tl.constexpr,
    ):
        pid_b = tl.program_id(1).to(tl.int64)
        offs_i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
        mask_i = offs_i < N
        row_i = offs_i // GRID_W
        col_i = offs_i - row_i * GRID_W
        code_rows = CODE + pid_b * stride_cb + offs_i[:, None] * N
        row_sum = tl.zeros([BLOCK_I], tl.float32)
        row_max = tl.zeros([BLOCK_I], tl.float32)
        for j0 in range(0, N, BLOCK_J):
            offs_j = j0 + tl.arange(0, BLOCK_J)
            val = _sfr_blur_tile(
                code_rows, row_i, col_i, mask_i, offs_j, KW, DECAY, N, GRID_W, KSIZE, PAD, BLOCK_I, BLOCK_J
            )
            val = tl.where(mask_i[:, None] & (offs_j < N)[None, :], val, 0.0)
            row_sum += tl.sum(val, 1)
            row_max = tl.maximum(row_max, tl.max(val, 1))
        denom = row_sum + 1e-8
        tl.store(RSUM + pid_b * N + offs_i, denom, mask=mask_i)
        # correctly rounded division is monotone: max_j(T_ij / denom_i) = max_j(T_ij) / denom_i exactly
        tl.store(RMAX + pid_b * N + offs_i, tl.div_rn(row_max, denom), mask=mask_i)

    @triton.jit
    def _sfr_finalize_kernel(
        CODE,
        KW,
        DECAY,
        RSUM,
        RMAX,
        OUT,
        N,
        GRID_W,
        KSIZE,
        PAD,
        stride_cb,
        stride_ob,
        BLOCK_R: tl.constexpr,
        BLOCK_C: tl.constexpr,
        BLOCK_G: tl.constexpr,
    ):
        pid_b = tl.program_id(2).to(tl.int64)
        gmax = tl.zeros([BLOCK_G], tl.float32)
        for g0 in range(0, N, BLOCK_G):
            offs_g = g0 + tl.arange(0, BLOCK_G)
            gmax = tl.maximum(gmax, tl.load(RMAX + pid_b * N + offs_g, mask=offs_g < N, other=0.0))
        top = tl.max(gmax, 0)
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        offs_i = rows - 1  # patch indices; row/col 0 is CLS
        offs_j = cols - 1
        mask_i = (rows >= 1) & (rows <= N)
        row_i = offs_i // GRID_W
        col_i = offs_i - row_i * GRID_W
        code_rows = CODE + pid_b * stride_cb + offs_i[:, None] * N
        val = _sfr_blur_tile(
            code_rows, row_i, col_i, mask_i, offs_j, KW, DECAY, N, GRID_W, KSIZE, PAD, BLOCK_R, BLOCK_C
        )
        denom = tl.load(RSUM + pid_b * N + offs_i, mask=mask_i, other=1.0)
        val = tl.div_rn(tl.div_rn(val, denom[:, None]), top)
        val = tl.where(mask_i[:, None] & ((cols >= 1) & (cols <= N))[None, :], val, 0.0)
        m = (rows < N + 1)[:, None] & (cols < N + 1)[None, :]
        tl.store(OUT + pid_b * stride_ob + rows[:, None] * (N + 1) + cols[None, :], val.to(tl.float16), mask=m)


@cache
def _launchers(interpret: bool):
    return tuple(jit_launcher(k, interpret) for k in (_sfr_path_kernel, _sfr_rowstat_kernel, _sfr_finalize_kernel))


def _sfr_affinity_fwd(labels: torch.Tensor, gaussian_std: float, path_check: str) -> torch.Tensor:
    """Launch the three SFR kernels (CUDA, or Triton's interpreter for CPU tensors)."""
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed")
    bsz, h, w = labels.shape
    n, dev = h * w, labels.device
    lab = labels.reshape(bsz, n).long().contiguous()
    max_steps = max(h, w) - 1  # the largest Chebyshev distance on the grid
    check = path_check != "none" and max_steps > 0
    # The reference's own expressions, so t_k and the decay factors are bit-identical to it.
    t_vec = torch.linspace(0, 1, steps=max_steps + 1, device=dev)
    decay = torch.exp(-torch.arange(max_steps + 1, device=dev) / max(max_steps, 1))
    taps = _gaussian_kernel(n, gaussian_std, dev).float().contiguous()
    code = torch.empty((bsz, n, n), dtype=torch.int8, device=dev)
    stats = torch.empty((2, bsz, n), dtype=torch.float32, device=dev)
    out = torch.empty((bsz, n + 1, n + 1), dtype=torch.float16, device=dev)
    interpret = runs_interpreted(dev)
    path_k, stat_k, final_k = _launchers(interpret)
    bi, bj = (16, 64) if interpret else (32, 64)
    opts = {} if interpret else {"num_warps": 4}
    path_k[(triton.cdiv(n, bi), triton.cdiv(n, bj), bsz)](
        lab,
        t_vec,
        code,
        n,
        w,
        max_steps if check else 0,
        lab.stride(0),
        n * n,
        CHECK_PATH=check,
        BLOCK_I=bi,
        BLOCK_J=bj,
        **opts,
        **({} if interpret else {"enable_fp_fusion": False}),
    )
    blur = (taps, decay, stats[0], stats[1])
    stat_k[(triton.cdiv(n, bi), bsz)](
        code,
        *blur,
        n,
        w,
        taps.numel(),
        taps.numel() // 2,
        n * n,
        BLOCK_I=bi,
        BLOCK_J=bj,
        **opts,
    )
    final_k[(triton.cdiv(n + 1, bi), triton.cdiv(n + 1, bj), bsz)](
        code,
        *blur,
        out,
        n,
        w,
        taps.numel(),
        taps.numel() // 2,
        n * n,
        (n + 1) * (n + 1),
        BLOCK_R=bi,
        BLOCK_C=bj,
        BLOCK_G=64 if interpret else 1024,
        **opts,
    )
    return out


def _sfr_affinity_fake(labels, gaussian_std, path_check):
    n1 = 1 + labels.shape[1] * labels.shape[2]
    return labels.new_empty((labels.shape[0], n1, n1), dtype=torch.float16)


_sfr_affinity_op = custom_op("sfr_affinity", _sfr_affinity_fake)(_sfr_affinity_fwd) if HAS_TRITON else None


def _check_args(labels: torch.Tensor, path_check: str, blur: str) -> None:
    # The reference's argument errors, raised before any launch.
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B, h, w), got shape {tuple(labels.shape)}")
    if path_check not in PATH_CHECKS:
        raise ValueError(f"path_check must be one of {PATH_CHECKS}, got {path_check!r}")
    if blur not in BLURS:
        raise ValueError(f"blur must be one of {BLURS}, got {blur!r}")


def unsupported_reason(labels: torch.Tensor, *, path_check: str = "prefix", blur: str = "raster") -> str | None:
    """Why the SFR kernels cannot take these inputs (None when they can)."""
    if path_check not in FUSED_PATH_CHECKS:
        return f"path_check={path_check!r} (fused: {FUSED_PATH_CHECKS})"
    if blur not in FUSED_BLURS:
        return f"blur={blur!r} (fused: {FUSED_BLURS})"
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        return f"labels dtype {labels.dtype} (integer labels expected)"
    if labels.numel() == 0 or labels.shape[0] > 65535:
        return f"labels shape {tuple(labels.shape)}"
    return None


def sfr_affinity_triton(
    labels: torch.Tensor,
    *,
    gaussian_std: float = 5.0,
    path_check: str = "prefix",
    blur: str = "raster",
) -> torch.Tensor:
    """The SFR kernels with the reference's signature (no dispatch; inputs must be supported)."""
    if not HAS_TRITON:
        raise RuntimeError("sfr_affinity_triton needs triton (pip install 'clipsam[triton]')")
    _check_args(labels, path_check, blur)
    reason = unsupported_reason(labels, path_check=path_check, blur=blur)
    if reason is not None:
        raise ValueError(f"sfr_affinity_triton cannot take these inputs: {reason}")
    assert _sfr_affinity_op is not None
    return _sfr_affinity_op(labels, float(gaussian_std), path_check)


def sfr_affinity(
    labels: torch.Tensor,
    *,
    gaussian_std: float = 5.0,
    path_check: str = "prefix",
    blur: str = "raster",
    force: bool | None = None,
) -> torch.Tensor:
    """S_hat: the Triton kernels where they can run, else ``sfr_affinity_ref``.

    Arguments are those of ``sfr_affinity_ref``; ``force`` True/False demands the kernels/the reference
    (None: automatic, see ``clipsam.kernels._dispatch``).

    Returns:
        (B, 1 + h*w, 1 + h*w) fp16 tensor, CLS row and column zero, global max 1 per window.
    """

    def reason() -> str | None:
        _check_args(labels, path_check, blur)
        return unsupported_reason(labels, path_check=path_check, blur=blur)

    kwargs: dict[str, Any] = dict(gaussian_std=gaussian_std, path_check=path_check, blur=blur)
    return dispatch(
        "sfr_affinity",
        labels.device,
        reason,
        force,
        lambda: sfr_affinity_triton(labels, **kwargs),
        lambda: sfr_affinity_ref(labels, **kwargs),
    )
