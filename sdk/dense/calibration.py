"""Visual calibration of the dense features (``DenseConfig.calibration``): ExCEL's SVC and a k-nearest-neighbour variant.

Both act per crop, inside ``DenseEncoder.__call__``, so the batched scheduler and the single-window reference path
run them unchanged. Neither is part of the published methods: with ``calibration="none"`` (default) nothing here
runs and the logits are bit-for-bit those of the method.

**"excel": static visual calibration** (``docs/algorithms.md`` section 11; ExCEL ``clip_surgery_model.py``, the dual-path blocks of
CLIP Surgery). The original path runs every block unchanged (standard attention + FFN). The last ``n``
(``calibration_blocks``, 5) blocks also feed a second path: with q, k, v of the *original* path's block input
(per head, (B, H, N1, d), s = d^-1/2)::

    A     = sum_heads[softmax(s q q^T) + softmax(s k k^T) + softmax(s v v^T)] / 3      (B, N1, N1), shared by all heads
    x_new = x_(L-n) + sum over the n blocks of out_proj(concat_heads(A v))              (out_proj with its bias; no FFN)

``x_(L-n)`` are the tokens entering the first of those blocks (CLIP Surgery starts the new path as a copy of that
input). The patch features are ``ln_post(x_new) @ proj``. This *replaces* the method's last-block variant: the base
attention (naclip / sclip / clearclip / clip) then only shapes the trunk, which is the standard CLIP trunk for every
base, so all bases give the same logits; RCS and SFR act on the last block and are refused with it (``DenseConfig``).

**"knn": low-confidence patch replacement** (this SDK's design, not a published method). After the final last
block, for the unit patch features f (B, N, E) of each crop and the query embeddings T (Q, E)::

    conf_i   = max_q softmax(logit_scale * f_i T^T)                     confidence of patch i
    low      = the int(knn_quantile * N) least confident patches (stable order: ties by raster index); high = the rest
    d_ij     = 1 - f_i . f_j                                            cosine distance, i in low, j in high
    N_k(i)   = the min(k, |high|) patches j in high with the smallest d_ij
    f_i     <- normalise(sum_{j in N_k(i)} w_ij f_j / sum w_ij),  w_ij = 1 / (d_ij + 1e-6)

and the logits are recomputed from the new features. Under ResCLIP, SFR's first pass uses the uncalibrated logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KNN_EPS = 1e-6


def svc_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """ExCEL's second-path attention output.

    Arguments:
        q, k, v: (B, H, N1, d) per-head projections of the original path's block input.
        scale: s, usually d^-1/2.

    Returns:
        (B, H, N1, d) ``A v`` with A (B, 1, N1, N1) = head-summed (softmax(s qq^T) + softmax(s kk^T) + softmax(s vv^T)) / 3.
    """
    a = torch.softmax(scale * (q @ q.transpose(-1, -2)), dim=-1)
    a = a + torch.softmax(scale * (k @ k.transpose(-1, -2)), dim=-1)
    a = a + torch.softmax(scale * (v @ v.transpose(-1, -2)), dim=-1)
    return (a.sum(dim=1, keepdim=True) / 3) @ v


def svc_tokens(encoder, x: torch.Tensor, blocks: int) -> torch.Tensor:
    """Tokens of ExCEL's second path, before ln_post.

    Arguments:
        encoder: ``DenseEncoder`` (its open_clip blocks and q/k/v, out-projection helpers).
        x: (B, N1, D) tokens after ln_pre (``DenseEncoder.embed``).
        blocks: n, the number of last blocks with the second path (1 <= n <= number of blocks).

    Returns:
        (B, N1, D) x_new (formula in the module docstring).
    """
    depth = len(encoder.blocks)
    start = depth - blocks
    x_new: torch.Tensor | None = None
    for i, block in enumerate(encoder.blocks):
        q, k, v = encoder.qkv(block, x)
        if i >= start:
            out = encoder.out_proj(block, svc_attention(q, k, v, q.shape[-1] ** -0.5))
            x_new = x + out if x_new is None else x_new + out
        if i == depth - 1:
            break  # the original path's last block output is not used
        x = x + block.ls_1(encoder.out_proj(block, F.scaled_dot_product_attention(q, k, v)))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    assert x_new is not None  # blocks >= 1
    return x_new


def knn_calibrate(f: torch.Tensor, text: torch.Tensor, logit_scale: float, k: int, quantile: float) -> torch.Tensor:
    """Replace the least confident patch features by a distance-weighted mean of their nearest confident ones.

    Arguments:
        f: (B, N, E) unit patch features of B crops.
        text: (Q, E) unit query embeddings.
        logit_scale: softmax temperature of the confidence (``DenseConfig.logit_scale``).
        k: neighbours per replaced patch (at most the number of confident patches).
        quantile: fraction of each crop's N patches replaced, 0 < quantile < 1.

    Returns:
        (B, N, E) features, unit norm, in f's dtype (computed in float32).
    """
    b, n, e = f.shape
    n_low = int(quantile * n)
    if n_low == 0 or n_low == n:
        return f
    x = f.float()
    conf = torch.softmax(logit_scale * (x @ text.float().T), dim=-1).amax(dim=-1)  # (B, N)
    order = torch.argsort(conf, dim=-1, stable=True)
    low, high = order[:, :n_low], order[:, n_low:]
    f_low = torch.gather(x, 1, low[..., None].expand(-1, -1, e))  # (B, n_low, E)
    f_high = torch.gather(x, 1, high[..., None].expand(-1, -1, e))  # (B, n_high, E)
    d = (1.0 - f_low @ f_high.transpose(1, 2)).clamp_min(0.0)  # (B, n_low, n_high)
    d_k, idx = torch.topk(d, min(k, n - n_low), dim=-1, largest=False)  # (B, n_low, k)
    w = 1.0 / (d_k + KNN_EPS)
    nb = torch.gather(f_high, 1, idx.reshape(b, -1, 1).expand(-1, -1, e)).reshape(b, n_low, -1, e)
    new = F.normalize((w[..., None] * nb).sum(dim=2) / w.sum(dim=-1, keepdim=True), dim=-1)
    out = x.scatter(1, low[..., None].expand(-1, -1, e), new)
    return out.to(f.dtype)
