"""Trace-safe wrappers of the dense CLIP encoder (``clipsam.dense.encoder.DenseEncoder``) and their parity cases.

Graph split (names and shapes in ``io_names``):

* without SFR, one graph ``clip_dense``: crops -> embed -> blocks 0..L-2 -> variant last block (RCS blend when
  configured) -> ln_post @ proj -> L2-normalised patch features @ text^T -> ``patch_logits`` (B, Q, h*w);
* with SFR (ResCLIP), three graphs so the trunk runs once: ``clip_dense_trunk`` (crops -> tokens entering the last
  block, and q, k of the RCS blocks), ``clip_dense_pass1`` (last block without SFR -> logits) and
  ``clipsam.ops.base.sfr_feedback``): upsample, PAMR, softmax, patch labels, S_hat, and passes
  ``sfr_bias = float32(fp16(lambda_sfr * S_hat))``, the term upstream adds in fp16.

Window size: every graph takes any crop size (dynamic H, W). What depends on the patch grid is an input computed on
the host: ``pos_embed`` (the bicubic +0.1 resize of the positional embedding, ``clipsam.ops.resize``) and, for the
NACLIP base, ``window_bias`` (Omega). Everything the configuration fixes (base, residual, RCS layers and weights,
tau_sfr and lambda_sfr) is baked in. The last block is ``kernels.rcs_attention_ref`` itself, given Omega and the
SFR term as tensors (graph inputs); the validation below compares every graph with ``DenseEncoder`` itself.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clipsam.kernels import rcs_attention_ref

from .component import ParityCase


class ClipDenseGraph(nn.Module):
    """One dense graph: ``part`` is "full", "trunk", "pass1" or "pass2" (inputs in ``io_names`` order)."""

    def __init__(self, encoder, part: str):
        super().__init__()
        if part not in ("full", "trunk", "pass1", "pass2"):
            raise ValueError(f"unknown dense graph part {part!r}")
        self.visual = encoder.visual
        self.enc = encoder
        self.part = part
        att = encoder.cfg.attention
        self.naclip = att.base == "naclip"
        self.rcs = bool(att.rcs)

    def embed(self, crops, pos_embed):
        v = self.visual
        x = v.conv1(crops).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        return v.ln_pre(torch.cat([cls, x], dim=1) + pos_embed.to(x.dtype))

    def head(self, x, rcs_q, rcs_k, omega, text, sfr_bias):
        att, v = self.enc.cfg.attention, self.visual
        block = self.enc.blocks[-1]
        q, k, val = self.enc.qkv(block, x)
        a = rcs_attention_ref(
            q,
            k,
            val,
            base=att.base,
            scale=q.shape[-1] ** -0.5,
            window=omega,
            sfr_term=sfr_bias,
            sfr_weights=att.sfr_weights if sfr_bias is not None else None,
            rcs_q=rcs_q,
            rcs_k=rcs_k,
            rcs_weights=att.rcs_weights if self.rcs else None,
        )
        out = self.enc.out_proj(block, a)
        if att.residual:
            x = x + out
            out = x + block.mlp(block.ln_2(x))
        f = (v.ln_post(out) @ v.proj)[:, 1:]
        f = f / f.norm(dim=-1, keepdim=True)
        return torch.matmul(f, text.to(f.dtype).t()).transpose(1, 2)  # (B, Q, N)

    def forward(self, *args):
        args = list(args)
        if self.part in ("full", "trunk"):
            x = self.embed(args.pop(0), args.pop(0))
            x, (rq, rk) = self.enc.trunk(x)
            if self.part == "trunk":
                return (x, rq, rk) if self.rcs else x
        else:
            x = args.pop(0)
            rq, rk = (args.pop(0), args.pop(0)) if self.rcs else (None, None)
        omega = args.pop(0) if self.naclip else None
        text = args.pop(0)
        sfr_bias = args.pop(0) if self.part == "pass2" else None
        return self.head(x, rq, rk, omega, text, sfr_bias)


# ---- example inputs and parity cases -----------------------------------------------------------------------
def _text(q: int, dim: int, gen) -> torch.Tensor:
    t = torch.randn(q, dim, generator=gen)
    return t / t.norm(dim=-1, keepdim=True)


def _host_inputs(encoder, crops):
    from clipsam.kernels.rcs_attention import neighbourhood_window

    gh, gw = crops.shape[-2] // encoder.patch, crops.shape[-1] // encoder.patch
    pos = encoder.pos_embed(gh, gw, crops).detach()
    omega = neighbourhood_window(gh, gw, float(encoder.cfg.feedback.gaussian_std))
    return (gh, gw), pos, omega


def dense_cases(encoder, part: str, sizes, num_queries: int = 5, seed: int = 0):
    """Example inputs (first size) and ``ParityCase``s (all sizes) for one dense graph.

    Arguments:
        encoder: ``DenseEncoder``; its own methods give the expected outputs.
        part: "full", "trunk", "pass1" or "pass2".
        sizes: [(batch, H, W), ...] crop batches; use a batch of at least 2 first (the traced example).

    Returns:
        (example tuple of tensors, list of ParityCase)
    """
    from clipsam.kernels import sfr_affinity_ref

    att, fb = encoder.cfg.attention, encoder.cfg.feedback
    gen = torch.Generator().manual_seed(seed)
    dim = encoder.visual.proj.shape[1]
    example, cases = None, []
    for b, h, w in sizes:
        crops = torch.randn(b, 3, h, w, generator=gen)
        text = _text(num_queries, dim, gen)
        grid, pos, omega = _host_inputs(encoder, crops)
        with torch.inference_mode():
            x, _ = encoder.embed(crops)
            tokens, rcs = encoder.trunk(x)
            sfr = sfr_bias = None
            if part == "pass2":
                labels = torch.randint(0, 3, (b, *grid), generator=gen)
                labels[:, : max(1, grid[0] // 2)] = 1
                s_hat = sfr_affinity_ref(
                    labels, gaussian_std=fb.gaussian_std, path_check=fb.sfr_path_check, blur=fb.sfr_blur
                )
                sfr = att.sfr_weights[1] * s_hat
                sfr_bias = sfr.float()
            if part == "trunk":
                expected = {"tokens": tokens}
                if att.rcs:
                    expected.update(rcs_q=rcs[0], rcs_k=rcs[1])
            elif part == "full":
                expected = {"patch_logits": encoder(crops, text).flatten(2)}
            else:
                out = encoder.last_block(tokens, grid, rcs, sfr)
                expected = {"patch_logits": encoder.patch_logits(out, grid, text).flatten(2)}
        inputs = {"crops": crops, "pos_embed": pos, "tokens": tokens, "window_bias": omega, "text_embeddings": text}
        if att.rcs:
            inputs.update(rcs_q=rcs[0], rcs_k=rcs[1])
        if sfr_bias is not None:
            inputs["sfr_bias"] = sfr_bias
        order = {"full": ("crops", "pos_embed"), "trunk": ("crops", "pos_embed")}.get(
            part, ("tokens",) + (("rcs_q", "rcs_k") if att.rcs else ())
        )
        if part != "trunk":
            order += (("window_bias",) if att.base == "naclip" else ()) + ("text_embeddings",)
            order += ("sfr_bias",) if part == "pass2" else ()
        if example is None:
            example = tuple(inputs[n].clone() for n in order)
        cases.append(
            ParityCase(
                f"batch {b}, {h}x{w} crop",
                {n: np.ascontiguousarray(inputs[n].numpy()) for n in order},
                {k: v.detach().numpy() for k, v in expected.items()},
            )
        )
    return example, cases
