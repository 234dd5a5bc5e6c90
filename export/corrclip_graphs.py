"""CorrCLIP's two graphs: DINO on its own, and the CLIP part with its region-dependent pieces as inputs.

    dino_features:        crops (B,3,H,W), dino_pos_embed (1+Ld, Dd)  -> unit q + k of DINO's last block (B, Ld, Dd)
    host (numpy, ``clipsam.ops.corrclip``): regions at the DINO grid, merging, scope softmax A, MCT masks, cell index
    clip_dense_corrclip:  crops, pos_embed, scope_attention A (B, Ld, Ld), mct_allow (B, NR, 1+T) bool,
                          mct_index (B, Ld) int64, text_embeddings (Q, E)  -> patch_logits (B, Q, Ld)

``dino_features`` is ``clipsam.dense.dino.dino_qk_features`` traced, with the positional embedding given (the host
resizes it with DINO's rule). ``clip_dense_corrclip`` is the trunk of ``CorrClipEncoder`` (``trunk``, the CLIP
positional embedding given) and its window step batched: the mask class tokens as side queries over every trunk
block's keys and values under ``mct_allow`` (rows beyond a window's regions see CLS only and are never indexed), the
value-only last block on the DINO grid under ``scope_attention``, and the three branches. The graph-baked fields are
the spatial blocks and the branch weights; merging, the scope rule and tau are host settings. The parity cases
compare both graphs with ``CorrClipEncoder`` itself, on region maps where merging fires.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipsam.dense.dino import dino_qk_features
from clipsam.ops.corrclip import window_inputs
from clipsam.ops.resize import interpolate_pos_embed

from .component import ParityCase
from .rfclip_dense import HostPosEncoder


class DinoFeaturesGraph(nn.Module):
    """``dino_features``: (crops, dino_pos_embed) -> (B, Ld, Dd) unit DINO q + k features."""

    def __init__(self, dino):
        super().__init__()
        self.dino = dino

    def forward(self, crops: torch.Tensor, dino_pos_embed: torch.Tensor) -> torch.Tensor:
        return dino_qk_features(self.dino, crops, dino_pos_embed)[0]


class CorrClipDenseGraph(nn.Module):
    """``clip_dense_corrclip`` of a ``CorrClipEncoder`` (its DINO is not used here)."""

    def __init__(self, encoder):
        super().__init__()
        self.visual = encoder.visual  # registers the weights with the module
        self.enc = encoder
        self.base = HostPosEncoder(encoder.visual, encoder.cfg)

    def mct_step(self, block, m, k, v, allow):
        """Batched ``CorrClipEncoder.mct_step``: m (B, NR, D), k, v (B, heads, 1+T, d), allow (B, NR, 1+T)."""
        b, n, d = m.shape
        heads = self.enc.heads
        h = block.ln_1(m)
        q = F.linear(h, block.attn.in_proj_weight[:d], block.attn.in_proj_bias[:d])
        q = q.view(b, n, heads, d // heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allow[:, None])
        m = m + block.ls_1(block.attn.out_proj(a.transpose(1, 2).reshape(b, n, d)))
        return m + block.ls_2(block.mlp(block.ln_2(m)))

    def forward(self, crops, pos_embed, scope_attention, mct_allow, mct_index, text_embeddings):
        enc, v = self.enc, self.visual
        self.base.host_pos = pos_embed
        try:
            x, (th, tw) = self.base.embed(crops)
        finally:
            self.base.host_pos = None
        x_main, x_sp, states = enc.trunk(x)
        b, nr = mct_allow.shape[0], mct_allow.shape[1]
        d = x.shape[-1]
        m = x[:, :1].expand(b, nr, d)
        for block, (k, vv) in zip(enc.blocks[:-1], states):
            m = self.mct_step(block, m, k, vv, mct_allow)
        last = enc.blocks[-1]
        _, k11, v11 = self.base.qkv(last, x_main)
        m = self.mct_step(last, m, k11, v11, mct_allow)
        fh, fw = crops.shape[2] // 8, crops.shape[3] // 8
        wv, bv = last.attn.in_proj_weight[2 * d :], last.attn.in_proj_bias[2 * d :]
        outs = []
        for z in (x_main, x_sp):
            val = F.linear(last.ln_1(z), wv, bv)[:, 1:].transpose(1, 2).reshape(b, d, th, tw)
            val = F.interpolate(val, size=(fh, fw), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
            outs.append(v.ln_post(last.attn.out_proj(torch.matmul(scope_attention, val))))
        sem = torch.gather(v.ln_post(m), 1, mct_index[..., None].expand(-1, -1, d))
        w_sp, w_sem = enc.cfg.corrclip.corr_branch_weights
        feat = (outs[0] + w_sp * outs[1] + w_sem * sem) @ v.proj
        f = F.normalize(feat, dim=-1)
        return torch.matmul(f, text_embeddings.to(f.dtype).t()).transpose(1, 2)  # (B, Q, Ld)


# ---- example inputs and parity cases -----------------------------------------------------------------------
def _crops_and_regions(sizes, gen):
    """Crops with a bright block and stripes, and region maps with several regions (two alike, so that merging can
    fire), the unsegmented region 0 and a padding band (-1)."""
    out = []
    for b, h, w in sizes:
        crops = torch.randn(b, 3, h, w, generator=gen)
        regions = torch.zeros(b, h, w)
        for i in range(b):
            regions[i, : h // 3, : w // 3] = 1
            regions[i, h // 2 :, w // 2 :] = 2 + i
            regions[i, h // 3 : h // 2, w // 3 :] = 4
            regions[i, :, w - 8 :] = -1  # padding
            crops[i, :, : h // 3, : w // 3] += 1.5
            crops[i, :, h // 2 :, w // 2 :] += 1.5
        out.append((crops, regions))
    return out


def corrclip_cases(encoder, sizes, num_queries: int = 5, seed: int = 0):
    """Example inputs (first size) and ``ParityCase``s for ``dino_features`` and ``clip_dense_corrclip``.

    Arguments:
        encoder: ``CorrClipEncoder``; ``dino_qk_features`` (with DINO's own resize) and the encoder's own call give the
            expected outputs; the region inputs come from ``clipsam.ops.corrclip.window_inputs`` on the PyTorch
            features.
        sizes: [(batch, H, W), ...] crop batches (H, W multiples of 8 and 16 as CorrCLIP's padded windows; a batch of
            at least 2 first).

    Returns:
        ((dino example, dino cases), (clip example, clip cases))
    """
    gen = torch.Generator().manual_seed(seed)
    corr = encoder.cfg.corrclip
    dim = encoder.visual.proj.shape[1]
    dpos = encoder.dino.pos_embed[0].detach().float().numpy()
    dino_ex = clip_ex = None
    dino_cases, clip_cases = [], []
    for crops, regions in _crops_and_regions(sizes, gen):
        b, _, h, w = crops.shape
        text = torch.randn(num_queries, dim, generator=gen)
        text = text / text.norm(dim=-1, keepdim=True)
        dgrid, grid = (h // 8, w // 8), (h // 16, w // 16)
        dp = torch.from_numpy(interpolate_pos_embed(dpos, *dgrid, native="grid"))
        pos = encoder.base.pos_embed(*grid, crops).detach()
        with torch.inference_mode():
            feats, _ = dino_qk_features(encoder.dino, crops)
            logits = encoder(crops, text, regions=regions)
        extra = window_inputs(feats.numpy(), regions.numpy(), dgrid, grid, corr)
        name = f"batch {b}, {h}x{w} crop"
        dino_cases.append(
            ParityCase(
                name,
                {"crops": np.ascontiguousarray(crops.numpy()), "dino_pos_embed": dp.numpy()},
                {"dino_features": feats.numpy()},
            )
        )
        inputs = {"crops": np.ascontiguousarray(crops.numpy()), "pos_embed": pos.numpy(), **extra}
        inputs["text_embeddings"] = text.numpy()
        clip_cases.append(ParityCase(name, inputs, {"patch_logits": logits.flatten(2).numpy()}))
        if dino_ex is None:
            dino_ex = (crops.clone(), dp.clone())
            clip_ex = (
                crops.clone(),
                pos.clone(),
                torch.from_numpy(extra["scope_attention"]),
                torch.from_numpy(extra["mct_allow"]),
                torch.from_numpy(extra["mct_index"]),
                text.clone(),
            )
    return (dino_ex, dino_cases), (clip_ex, clip_cases)
