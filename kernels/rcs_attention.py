"""Last-block attention of the training-free CLIP segmenters, with ResCLIP's RCS and SFR terms.

Per head (``docs/algorithms.md`` sections 8 and 9), with s = d^-1/2:

    base logits   Z_b  = s*k k^T (naclip), s*q q^T (clearclip), s*q k^T (clip);  sclip uses both s*q q^T and s*k k^T
    SFR blend     Z_b <- tau_sfr * ((1 - lambda_sfr) * Z_b + T),  T = fp16(lambda_sfr * S_hat)   (as upstream)
    window        Z_b <- Z_b + Omega                                                       (naclip only)
    base softmax  A    = softmax(Z_b)         (sclip: softmax(Z_q) + softmax(Z_k), rows sum to 2)
    RCS blend     A   <- tau_rcs * ((1 - lambda_rcs) * A + lambda_rcs * A_c),  A_c = mean_l softmax(s q_l k_l^T)
    output        A v

The reference below materialises every N x N matrix; it is the CPU path, the ONNX export path and the
numerical reference for the fused kernel. Operation order follows the upstream code (ResCLIP
``clip/model.py custom_attn``) so that fp32 results agree to rounding.
"""

from __future__ import annotations

import math
import os
from functools import cache, lru_cache
from typing import Any

import torch

BASES = ("clip", "sclip", "clearclip", "naclip")


@lru_cache(maxsize=32)
def _window_cpu(h: int, w: int, std: float) -> torch.Tensor:
    # The Gaussian over patch offsets, built as upstream (NACLIP gaussian_window): linspace in units of
    # 1/(std*sqrt(2)) over a (2h-1) x (2w-1) grid, so its values are bit-identical to the reference's.
    constant = 1.0 / (std * math.sqrt(2.0))
    ks = []
    for dim in (2 * h - 1, 2 * w - 1):
        start = -(dim - 1) / 2.0
        ks.append(torch.linspace(start * constant, (start + (dim - 1)) * constant, steps=dim, dtype=torch.float32))
    window = torch.exp(-(torch.stack(torch.meshgrid(*ks, indexing="ij")) ** 2).sum(0))
    # Omega_ij = window[(r_j - r_i) + h - 1, (c_j - c_i) + w - 1]; the CLS row and column are zero.
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    dr = rows[None, :] - rows[:, None] + h - 1
    dc = cols[None, :] - cols[:, None] + w - 1
    omega = torch.zeros(h * w + 1, h * w + 1, dtype=torch.float32)
    omega[1:, 1:] = window[dr, dc]
    return omega


def neighbourhood_window(h: int, w: int, std: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """NACLIP's additive neighbourhood bias Omega for an h x w patch grid.

    Returns:
        (1 + h*w, 1 + h*w) tensor; Omega_ij = exp(-|pos_i - pos_j|^2 / (2 std^2)) in patch units, CLS row/col 0.
    """
    return _window_cpu(int(h), int(w), float(std)).to(device=device, dtype=dtype)


def _blend_sfr(logits: torch.Tensor, sfr_term: torch.Tensor | None, sfr_weights) -> torch.Tensor:
    if sfr_term is None:
        return logits
    tau, lam = sfr_weights
    return tau * ((1 - lam) * logits + sfr_term[:, None].to(logits.dtype))


def rcs_mean_maps(rcs_q: torch.Tensor, rcs_k: torch.Tensor, scale: float) -> torch.Tensor:
    """RCS's averaged attention maps: mean over layers of softmax(s q_l k_l^T), (B, H, N1, N1) from (L, B, H, N1, d).

    The same for both passes of ResCLIP's last block: compute it once and pass it as ``rcs_mean=`` (reference path).
    Eagerly, each softmax is written straight into its slice of the (L, B, H, N1, N1) stack, so the maps are not
    copied once more by ``torch.stack``; the mean is the same reduction of the same values (bit for bit). Traced
    for export, it is the plain ``stack`` form.
    """
    n = rcs_q.shape[0]
    logits = (torch.matmul(rcs_q[i] * scale, rcs_k[i].transpose(-1, -2)) for i in range(n))
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.is_grad_enabled() and rcs_q.requires_grad:
        return torch.stack([torch.softmax(z, dim=-1) for z in logits]).mean(dim=0)
    stack = None
    for i, z in enumerate(logits):
        if stack is None:
            stack = z.new_empty((n, *z.shape))
        torch.softmax(z, -1, out=stack[i])
    assert stack is not None, "rcs_mean_maps needs at least one RCS layer"
    return stack.mean(dim=0)


def rcs_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    base: str,
    scale: float,
    window: tuple[int, int, float] | torch.Tensor | None = None,
    sfr_term: torch.Tensor | None = None,
    sfr_weights: tuple[float, float] | None = None,
    rcs_q: torch.Tensor | None = None,
    rcs_k: torch.Tensor | None = None,
    rcs_weights: tuple[float, float] | None = None,
    rcs_mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """Materialised last-block attention (reference path; also what ONNX export traces).

    Arguments:
        q, k, v: (B, H, N1, d) per-head projections of the tokens entering the last block (N1 = 1 + h*w).
        base: one of ``BASES``.
        scale: s = d^-1/2.
        window: NACLIP's Omega, as (h, w, std) of the patch grid or as the (N1, N1) tensor itself
            (``neighbourhood_window``; export passes it as a graph input); required for base ``naclip``.
        sfr_term: (B, N1, N1) SFR term lambda_sfr * S_hat in fp16 (or those values in float32), S_hat the
            class-consistency matrix divided by its global max; None without SFR.
        sfr_weights: (tau_sfr, lambda_sfr), required with ``sfr_term``.
        rcs_q, rcs_k: (L, B, H, N1, d) q and k of the RCS layers (blocks 6-9), or None for no RCS.
        rcs_weights: (tau_rcs, lambda_rcs), required with ``rcs_q``.
        rcs_mean: ``rcs_mean_maps(rcs_q, rcs_k, scale)`` computed beforehand (ResCLIP's two passes share it); with it,
            ``rcs_q`` and ``rcs_k`` are not read again. The result is the same bit for bit.

    Returns:
        (B, H, N1, d) tensor A v in the dtype of ``v``.
    """
    if base not in BASES:
        raise ValueError(f"unknown attention base {base!r}; expected one of {BASES}")
    if sfr_term is not None and sfr_weights is None:
        raise ValueError("sfr_weights=(tau, lambda) is required when sfr_term is given")
    if rcs_q is not None and (rcs_k is None or rcs_weights is None):
        raise ValueError("rcs_k and rcs_weights=(tau, lambda) are required when rcs_q is given")
    if base == "sclip":
        zq = _blend_sfr(torch.matmul(q, q.transpose(-1, -2)) * scale, sfr_term, sfr_weights)
        zk = _blend_sfr(torch.matmul(k, k.transpose(-1, -2)) * scale, sfr_term, sfr_weights)
        attn = torch.softmax(zq, dim=-1) + torch.softmax(zk, dim=-1)
    else:
        if base == "naclip":
            z = torch.matmul(k, k.transpose(-1, -2)) * scale
        elif base == "clearclip":
            z = torch.matmul(q, q.transpose(-1, -2)) * scale
        else:
            z = torch.matmul(q * scale, k.transpose(-1, -2))
        z = _blend_sfr(z, sfr_term, sfr_weights)
        if base == "naclip":
            if window is None:
                raise ValueError("base 'naclip' needs window=(h, w, std)")
            omega = window if isinstance(window, torch.Tensor) else neighbourhood_window(*window, device=z.device)
            z = z + omega.to(z.dtype)
        attn = torch.softmax(z, dim=-1)
    if rcs_q is not None:
        assert rcs_k is not None and rcs_weights is not None  # checked above
        tau, lam = rcs_weights
        maps = rcs_mean if rcs_mean is not None else rcs_mean_maps(rcs_q, rcs_k, scale)
        attn = tau * ((1 - lam) * attn + lam * maps)
    return torch.matmul(attn, v)


# ------------------------------------------------------------------------------------------------------
# Fused Triton kernel
#
# The block is a sum of attention-like passes that share V: one or two base softmaxes (SFR bias and Omega
# folded into their logits) and one per RCS layer. One program owns a (batch*head, query tile) and runs
# the passes one after another, each a flash-style loop over key tiles with an online softmax in base 2:
#
#     out = w_base * sum_base O_base + w_rcs * sum_l O_l,   O = softmax(Z) V (normalised per pass)
#     w_base = tau_rcs * (1 - lambda_rcs), w_rcs = tau_rcs * lambda_rcs / L   (1 and 0 without RCS)
#
# Work: 4*N^2*d FLOPs per pass and head (QK^T, PV): (1 or 2) + L passes. Traffic: nothing N x N is
# written; per head the kernel reads its query-side operands once, K-side operands and V once per pass
# (L2-resident across the query tiles of a head) and the fp16 S_hat tile once per base loop (shared by the
# two SCLIP softmaxes and, through L2, by the heads of a window): (4 + 2L)*N*d elements per head plus
# 2*N^2 bytes per window. The materialised reference (ResCLIP, L = 4) makes about 50 N x N reads and
# writes per head instead (logits, each blend step, softmaxes, stack, mean).
# ------------------------------------------------------------------------------------------------------

from ._dispatch import HAS_TRITON, custom_op, dispatch, jit_launcher, runs_interpreted, tl, triton  # noqa: E402

_BASE_OPERANDS = {"clip": ("qk",), "clearclip": ("qq",), "naclip": ("kk",), "sclip": ("qq", "kk")}
SUPPORTED_HEAD_DIMS = (64,)
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Dot precision for fp32 inputs: "tf32x3" keeps ~fp32 accuracy on tensor cores; "ieee" is exact fp32 FMA.
FP32_DOT_PRECISION = os.environ.get("CLIPSAM_TRITON_FP32_PRECISION", "tf32x3")
_LOG2E = 1.4426950408889634

if HAS_TRITON:

    @triton.jit
    def _rcs_attn_fwd_kernel(
        A1,
        B1,
        A2,
        B2,
        V,
        S,
        RQ,
        RK,
        O,  # noqa: E741 (the kernel's output, named as in Triton's tutorials)
        stride_a1b,
        stride_a1h,
        stride_a1n,
        stride_b1b,
        stride_b1h,
        stride_b1n,
        stride_a2b,
        stride_a2h,
        stride_a2n,
        stride_b2b,
        stride_b2h,
        stride_b2n,
        stride_vb,
        stride_vh,
        stride_vn,
        stride_sb,
        stride_sn,
        stride_rql,
        stride_rqb,
        stride_rqh,
        stride_rqn,
        stride_rkl,
        stride_rkb,
        stride_rkh,
        stride_rkn,
        stride_ob,
        stride_oh,
        stride_on,
        H,
        N,
        GRID_W,
        NUM_RCS,
        qk_coef,
        sfr_coef,
        win_coef,
        rcs_coef,
        w_base,
        w_rcs,
        TWO_BASE: tl.constexpr,
        HAS_SFR: tl.constexpr,
        HAS_WINDOW: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        DOT_PRECISION: tl.constexpr,
        DOT_F32: tl.constexpr,
    ):
        # Base logits, in log2 units: qk_coef = s*tau_sfr*(1-lambda_sfr)*log2e (s*log2e without SFR),
        # bias = T * tau_sfr*log2e + Omega*log2e (T = fp16(lambda_sfr * S_hat)); RCS logits: rcs_coef = s*log2e.
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = (pid_bh // H).to(tl.int64)
        h = (pid_bh % H).to(tl.int64)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        mask_m = offs_m < N
        v_ptr = V + b * stride_vb + h * stride_vh
        b1_ptr = B1 + b * stride_b1b + h * stride_b1h
        a1 = tl.load(
            A1 + b * stride_a1b + h * stride_a1h + offs_m[:, None] * stride_a1n + offs_d[None, :],
            mask=mask_m[:, None],
            other=0.0,
        )
        if DOT_F32:
            a1 = a1.to(tl.float32)
        m1 = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l1 = tl.zeros([BLOCK_M], tl.float32)
        acc1 = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        if TWO_BASE:
            b2_ptr = B2 + b * stride_b2b + h * stride_b2h
            a2 = tl.load(
                A2 + b * stride_a2b + h * stride_a2h + offs_m[:, None] * stride_a2n + offs_d[None, :],
                mask=mask_m[:, None],
                other=0.0,
            )
            if DOT_F32:
                a2 = a2.to(tl.float32)
            m2 = tl.full([BLOCK_M], float("-inf"), tl.float32)
            l2 = tl.zeros([BLOCK_M], tl.float32)
            acc2 = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        if HAS_SFR:
            s_ptr = S + b * stride_sb + offs_m[:, None] * stride_sn
        if HAS_WINDOW:
            row_i = (offs_m - 1) // GRID_W
            col_i = (offs_m - 1) - row_i * GRID_W

        # ---- base pass(es): SFR bias and Omega in the logits; SCLIP's two softmaxes share S and V ----
        for start_n in range(0, N, BLOCK_N):
            offs_k = start_n + offs_n
            mask_k = offs_k < N
            kt = tl.load(b1_ptr + offs_k[None, :] * stride_b1n + offs_d[:, None], mask=mask_k[None, :], other=0.0)
            v = tl.load(v_ptr + offs_k[:, None] * stride_vn + offs_d[None, :], mask=mask_k[:, None], other=0.0)
            if DOT_F32:
                kt = kt.to(tl.float32)
                v = v.to(tl.float32)
            bias = tl.where(mask_k, 0.0, float("-inf"))[None, :]
            if HAS_SFR:
                sv = tl.load(s_ptr + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
                bias += sv.to(A1.dtype.element_ty).to(tl.float32) * sfr_coef  # T cast to the logits' dtype
            if HAS_WINDOW:
                row_j = (offs_k - 1) // GRID_W
                col_j = (offs_k - 1) - row_j * GRID_W
                dr = row_i[:, None] - row_j[None, :]
                dc = col_i[:, None] - col_j[None, :]
                om = tl.exp2((dr * dr + dc * dc).to(tl.float32) * win_coef) * 1.4426950408889634
                bias += tl.where((offs_m[:, None] > 0) & (offs_k[None, :] > 0), om, 0.0)
            z = tl.dot(a1, kt, input_precision=DOT_PRECISION) * qk_coef + bias
            m_new = tl.maximum(m1, tl.max(z, 1))
            alpha = tl.exp2(m1 - m_new)
            p = tl.exp2(z - m_new[:, None])
            l1 = l1 * alpha + tl.sum(p, 1)
            p = p.to(V.dtype.element_ty)  # P in V's dtype, as flash attention (fp32 stays fp32)
            if DOT_F32:
                p = p.to(tl.float32)
            acc1 = acc1 * alpha[:, None] + tl.dot(p, v, input_precision=DOT_PRECISION)
            m1 = m_new
            if TWO_BASE:
                kt2 = tl.load(b2_ptr + offs_k[None, :] * stride_b2n + offs_d[:, None], mask=mask_k[None, :], other=0.0)
                if DOT_F32:
                    kt2 = kt2.to(tl.float32)
                z2 = tl.dot(a2, kt2, input_precision=DOT_PRECISION) * qk_coef + bias
                m2_new = tl.maximum(m2, tl.max(z2, 1))
                alpha2 = tl.exp2(m2 - m2_new)
                p2 = tl.exp2(z2 - m2_new[:, None])
                l2 = l2 * alpha2 + tl.sum(p2, 1)
                p2 = p2.to(V.dtype.element_ty)
                if DOT_F32:
                    p2 = p2.to(tl.float32)
                acc2 = acc2 * alpha2[:, None] + tl.dot(p2, v, input_precision=DOT_PRECISION)
                m2 = m2_new
        out = acc1 / l1[:, None]
        if TWO_BASE:
            out += acc2 / l2[:, None]
        out = out * w_base

        # ---- RCS passes: softmax(s q_l k_l^T) V for each saved layer, weighted tau*lambda/L ----
        rq_ptr = RQ + b * stride_rqb + h * stride_rqh + offs_m[:, None] * stride_rqn + offs_d[None, :]
        rk_ptr = RK + b * stride_rkb + h * stride_rkh
        for _layer in range(0, NUM_RCS):
            qa = tl.load(rq_ptr, mask=mask_m[:, None], other=0.0)
            if DOT_F32:
                qa = qa.to(tl.float32)
            m_r = tl.full([BLOCK_M], float("-inf"), tl.float32)
            l_r = tl.zeros([BLOCK_M], tl.float32)
            acc_r = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
            for start_n in range(0, N, BLOCK_N):
                offs_k = start_n + offs_n
                mask_k = offs_k < N
                kt = tl.load(rk_ptr + offs_k[None, :] * stride_rkn + offs_d[:, None], mask=mask_k[None, :], other=0.0)
                v = tl.load(v_ptr + offs_k[:, None] * stride_vn + offs_d[None, :], mask=mask_k[:, None], other=0.0)
                if DOT_F32:
                    kt = kt.to(tl.float32)
                    v = v.to(tl.float32)
                z = (
                    tl.dot(qa, kt, input_precision=DOT_PRECISION) * rcs_coef
                    + tl.where(mask_k, 0.0, float("-inf"))[None, :]
                )
                m_new = tl.maximum(m_r, tl.max(z, 1))
                alpha = tl.exp2(m_r - m_new)
                p = tl.exp2(z - m_new[:, None])
                l_r = l_r * alpha + tl.sum(p, 1)
                p = p.to(V.dtype.element_ty)
                if DOT_F32:
                    p = p.to(tl.float32)
                acc_r = acc_r * alpha[:, None] + tl.dot(p, v, input_precision=DOT_PRECISION)
                m_r = m_new
            out += (acc_r / l_r[:, None]) * w_rcs
            rq_ptr += stride_rql
            rk_ptr += stride_rkl

        o_ptr = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :]
        tl.store(o_ptr, out.to(O.dtype.element_ty), mask=mask_m[:, None])


# (BLOCK_M, BLOCK_N, warps, stages). Chosen from ptxas -v on sm_90a (no spills or a few dozen bytes for
# 16-bit inputs); fp32 with tf32x3 splits every operand in two, so it gets narrower key tiles and 2 stages.
# The first entry is the fixed choice when autotuning is off (CLIPSAM_TRITON_AUTOTUNE=0).
_CONFIGS_16 = ((128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3), (128, 64, 8, 2))
_CONFIGS_32 = ((128, 32, 8, 2), (64, 32, 4, 2), (128, 32, 8, 3), (64, 64, 4, 2))


@cache
def _compiled_kernel(tuned: bool, fp32: bool = False):
    jitted = jit_launcher(_rcs_attn_fwd_kernel, interpret=False)
    if not tuned:
        return jitted
    configs = [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
        for m, n, w, s in (_CONFIGS_32 if fp32 else _CONFIGS_16)
    ]
    key = ["N", "TWO_BASE", "HAS_SFR", "HAS_WINDOW", "HEAD_DIM", "DOT_PRECISION"]
    return triton.autotune(configs=configs, key=key)(jitted)


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _rcs_attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sfr_term: torch.Tensor | None,
    rcs_q: torch.Tensor | None,
    rcs_k: torch.Tensor | None,
    base: str,
    scale: float,
    grid_w: int,
    window_std: float,
    sfr_tau: float,
    sfr_lam: float,
    rcs_tau: float,
    rcs_lam: float,
    block_m: int = 0,
    block_n: int = 0,
) -> torch.Tensor:
    """Launch the fused kernel (CUDA, or Triton's interpreter for CPU tensors). Arguments as the reference."""
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed")
    q, k, v = _rows(q), _rows(k), _rows(v)
    bsz, heads, n, d = q.shape
    out = torch.empty((bsz, heads, n, d), dtype=v.dtype, device=v.device)
    src = {"q": q, "k": k}
    pairs = [(src[p[0]], src[p[1]]) for p in _BASE_OPERANDS[base]]
    (a1, b1), (a2, b2) = pairs[0], pairs[-1]
    has_sfr = sfr_term is not None
    if sfr_term is not None:
        sfr_term = _rows(sfr_term)
        s_strides = (sfr_term.stride(0) if sfr_term.shape[0] > 1 else 0, sfr_term.stride(1))
    else:
        sfr_term, s_strides = q, (0, 0)
    num_rcs = 0 if rcs_q is None else rcs_q.shape[0]
    if num_rcs:
        assert rcs_q is not None and rcs_k is not None
        rcs_q, rcs_k = _rows(rcs_q), _rows(rcs_k)
        rq, rk = rcs_q.stride()[:4], rcs_k.stride()[:4]
        w_base, w_rcs = rcs_tau * (1.0 - rcs_lam), rcs_tau * rcs_lam / num_rcs
    else:
        rcs_q, rcs_k, rq, rk = q, k, (0, 0, 0, 0), (0, 0, 0, 0)
        w_base, w_rcs = 1.0, 0.0
    qk_coef = scale * _LOG2E * (sfr_tau * (1.0 - sfr_lam) if has_sfr else 1.0)
    has_window = base == "naclip"
    win_coef = -_LOG2E / (2.0 * window_std**2) if has_window else 0.0
    precision = FP32_DOT_PRECISION if q.dtype == torch.float32 else "tf32"
    interpret = runs_interpreted(q.device)
    args = (
        a1,
        b1,
        a2,
        b2,
        v,
        sfr_term,
        rcs_q,
        rcs_k,
        out,
        *a1.stride()[:3],
        *b1.stride()[:3],
        *a2.stride()[:3],
        *b2.stride()[:3],
        *v.stride()[:3],
        *s_strides,
        *rq,
        *rk,
        *out.stride()[:3],
        heads,
        n,
        max(int(grid_w), 1),
        num_rcs,
        qk_coef,
        float(sfr_tau) * _LOG2E if has_sfr else 0.0,
        win_coef,
        scale * _LOG2E,
        float(w_base),
        float(w_rcs),
    )
    flags = dict(TWO_BASE=len(pairs) == 2, HAS_SFR=has_sfr, HAS_WINDOW=has_window, HEAD_DIM=d, DOT_PRECISION=precision)
    if interpret:
        # The interpreter (triton 3.8) multiplies bf16 bit patterns as integers in tl.dot: upcast there.
        bm, bn = block_m or 16, block_n or 16
        grid = (triton.cdiv(n, bm), bsz * heads)
        jit_launcher(_rcs_attn_fwd_kernel, interpret=True)[grid](
            *args, **flags, BLOCK_M=bm, BLOCK_N=bn, DOT_F32=q.dtype == torch.bfloat16
        )
    elif block_m or os.environ.get("CLIPSAM_TRITON_AUTOTUNE", "1") == "0":
        first = (_CONFIGS_32 if q.dtype == torch.float32 else _CONFIGS_16)[0]
        bm, bn = block_m or first[0], block_n or first[1]
        grid = (triton.cdiv(n, bm), bsz * heads)
        _compiled_kernel(False)[grid](
            *args, **flags, BLOCK_M=bm, BLOCK_N=bn, DOT_F32=False, num_warps=8 if bm >= 128 else 4, num_stages=first[3]
        )
    else:
        tuned = lambda meta: (triton.cdiv(n, meta["BLOCK_M"]), bsz * heads)  # noqa: E731
        _compiled_kernel(True, q.dtype == torch.float32)[tuned](*args, **flags, DOT_F32=False)
    return out


def _rcs_attention_fake(
    q, k, v, sfr_term, rcs_q, rcs_k, base, scale, grid_w, window_std, sfr_tau, sfr_lam, rcs_tau, rcs_lam
):
    return q.new_empty(q.shape, dtype=v.dtype)


_rcs_attention_op = custom_op("rcs_attention", _rcs_attention_fake)(_rcs_attention_fwd) if HAS_TRITON else None


def _check_args(base, window, sfr_term, sfr_weights, rcs_q, rcs_k, rcs_weights) -> None:
    # The reference's argument errors, raised before any launch.
    if base not in BASES:
        raise ValueError(f"unknown attention base {base!r}; expected one of {BASES}")
    if sfr_term is not None and sfr_weights is None:
        raise ValueError("sfr_weights=(tau, lambda) is required when sfr_term is given")
    if rcs_q is not None and (rcs_k is None or rcs_weights is None):
        raise ValueError("rcs_k and rcs_weights=(tau, lambda) are required when rcs_q is given")
    if base == "naclip" and window is None:
        raise ValueError("base 'naclip' needs window=(h, w, std)")


def unsupported_reason(q, k, v, *, base, window=None, sfr_term=None, rcs_q=None, rcs_k=None) -> str | None:
    """Why the fused kernel cannot take these inputs (None when it can)."""
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        return f"q, k, v must share one (B, H, N1, d) shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
    if q.dtype not in SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"dtypes {q.dtype}/{k.dtype}/{v.dtype} (supported: one of {SUPPORTED_DTYPES} for all)"
    bsz, heads, n, d = q.shape
    if d not in SUPPORTED_HEAD_DIMS:
        return f"head dim {d} (supported: {SUPPORTED_HEAD_DIMS})"
    if bsz * heads > 65535 or n == 0:
        return f"B*H = {bsz * heads} (max 65535) or N1 = {n}"
    tensors = [t for t in (q, k, v, sfr_term, rcs_q, rcs_k) if t is not None]
    if any(t.device != q.device for t in tensors):
        return "the tensors are on different devices"
    if isinstance(window, torch.Tensor):
        return "window given as a tensor (the kernel computes Omega from (h, w, std))"
    if base == "naclip" and window is not None and 1 + int(window[0]) * int(window[1]) != n:
        return f"window grid {window[0]}x{window[1]} does not match N1 = {n}"
    if sfr_term is not None:
        if sfr_term.dim() != 3 or sfr_term.shape[0] not in (1, bsz) or tuple(sfr_term.shape[1:]) != (n, n):
            return f"sfr_term must be (B, N1, N1) = ({bsz}, {n}, {n}), got {tuple(sfr_term.shape)}"
        if sfr_term.dtype not in SUPPORTED_DTYPES:
            return f"sfr_term dtype {sfr_term.dtype}"
    if rcs_q is not None:
        if rcs_q.dim() != 5 or tuple(rcs_q.shape[1:]) != tuple(q.shape) or rcs_k.shape != rcs_q.shape:
            return f"rcs_q/rcs_k must be (L, {bsz}, {heads}, {n}, {d}), got {tuple(rcs_q.shape)}, {tuple(rcs_k.shape)}"
        if rcs_q.dtype != q.dtype or rcs_k.dtype != q.dtype:
            return f"rcs dtypes {rcs_q.dtype}/{rcs_k.dtype} differ from q's {q.dtype}"
    return None


def rcs_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    base: str,
    scale: float,
    window: tuple[int, int, float] | None = None,
    sfr_term: torch.Tensor | None = None,
    sfr_weights: tuple[float, float] | None = None,
    rcs_q: torch.Tensor | None = None,
    rcs_k: torch.Tensor | None = None,
    rcs_weights: tuple[float, float] | None = None,
    rcs_mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fused kernel with the reference's signature (no dispatch; inputs must be supported; it computes the RCS
    maps on the fly, so a precomputed ``rcs_mean`` is refused)."""
    if not HAS_TRITON:
        raise RuntimeError("rcs_attention_triton needs triton (pip install 'clipsam[triton]')")
    if rcs_mean is not None:
        raise ValueError("rcs_attention_triton cannot take these inputs: a precomputed rcs_mean (reference path only)")
    _check_args(base, window, sfr_term, sfr_weights, rcs_q, rcs_k, rcs_weights)
    reason = unsupported_reason(q, k, v, base=base, window=window, sfr_term=sfr_term, rcs_q=rcs_q, rcs_k=rcs_k)
    if reason is not None:
        raise ValueError(f"rcs_attention_triton cannot take these inputs: {reason}")
    assert _rcs_attention_op is not None
    naclip = base == "naclip" and window is not None and not isinstance(window, torch.Tensor)
    grid_w, std = (int(window[1]), float(window[2])) if naclip else (1, 1.0)  # type: ignore[index]
    with_sfr = sfr_term is not None and sfr_weights is not None
    sfr_tau, sfr_lam = (float(sfr_weights[0]), float(sfr_weights[1])) if with_sfr else (1.0, 0.0)  # type: ignore[index]
    if rcs_q is None:
        rcs_k = None
    with_rcs = rcs_q is not None and rcs_weights is not None
    rcs_tau, rcs_lam = (float(rcs_weights[0]), float(rcs_weights[1])) if with_rcs else (1.0, 0.0)  # type: ignore[index]
    return _rcs_attention_op(
        q, k, v, sfr_term, rcs_q, rcs_k, base, float(scale), grid_w, std, sfr_tau, sfr_lam, rcs_tau, rcs_lam
    )


def rcs_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    base: str,
    scale: float,
    window: tuple[int, int, float] | None = None,
    sfr_term: torch.Tensor | None = None,
    sfr_weights: tuple[float, float] | None = None,
    rcs_q: torch.Tensor | None = None,
    rcs_k: torch.Tensor | None = None,
    rcs_weights: tuple[float, float] | None = None,
    rcs_mean: torch.Tensor | None = None,
    force: bool | None = None,
) -> torch.Tensor:
    """Last-block attention: the fused Triton kernel where it can run, else ``rcs_attention_ref``.

    Arguments are those of ``rcs_attention_ref``; ``force`` True/False demands the kernel/the reference
    (None: automatic, see ``clipsam.kernels._dispatch``). A precomputed ``rcs_mean`` is for the reference path
    (CPU): the kernel cannot take it.

    Returns:
        (B, H, N1, d) tensor A v in the dtype of ``v``.
    """
    kwargs: dict[str, Any] = dict(
        base=base,
        scale=scale,
        window=window,
        sfr_term=sfr_term,
        sfr_weights=sfr_weights,
        rcs_q=rcs_q,
        rcs_k=rcs_k,
        rcs_weights=rcs_weights,
    )

    def reason() -> str | None:
        _check_args(base, window, sfr_term, sfr_weights, rcs_q, rcs_k, rcs_weights)
        if rcs_mean is not None:
            return "a precomputed rcs_mean (the fused kernel computes the RCS maps itself)"
        return unsupported_reason(q, k, v, base=base, window=window, sfr_term=sfr_term, rcs_q=rcs_q, rcs_k=rcs_k)

    return dispatch(
        "rcs_attention",
        q.device,
        reason,
        force,
        lambda: rcs_attention_triton(q, k, v, **kwargs),
        lambda: rcs_attention_ref(q, k, v, **kwargs, rcs_mean=rcs_mean),
    )
