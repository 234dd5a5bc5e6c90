"""CorrCLIP v1 (``method="corrclip"``): region-scoped value attention guided by DINO, mask class tokens (MCTs) and
three last-block branches, over an unmodified open_clip ViT and a timm DINO ViT (``clipsam.dense.dino``).

One window of h x w pixels (multiples of 56 after padding; ``docs/algorithms.md`` section 16.3):

    F_d   = DINO q + k of the last block, L2-normalised         (Ld, D_d), Ld = (h/8)(w/8)
    S     = F_d F_dᵀ
    R     = region ids at the DINO grid (top-left pixel of each 8 x 8 cell); padding is one more region
    R     = merge_regions(R, F_d): regions whose mean DINO features chain within eps share an id
    A     = softmax(tau * S) over the pairs ``scope`` allows      (Ld, Ld), shared by every head and branch
    trunk = CLIP blocks 0 .. L-2 unchanged; spatial = mean of the outputs of ``spatial_blocks``
    MCT k = CLS that attends, in every block, only to CLS and the patches of region k (CLIP grid)
    feat  = LN(out_proj(A v(main))) + w_sp LN(out_proj(A v(spatial))) + w_sem LN(MCT of the cell's region)
    logits (Q, h/8, w/8) = normalize(feat proj) · text

The region-dependent steps run per window (their shapes depend on the regions); DINO and the CLIP trunk are batched.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..config import DenseConfig
from ..errors import ConfigError
from ..masks import unsegmented_id
from ..method_config import spatial_blocks
from ..ops.corrclip import MERGED_ID, PAD_ID, components
from .dino import dino_qk_features
from .encoder import DenseEncoder


def nearest(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(h, w) ids -> ``size`` with PyTorch's legacy nearest rule (source index floor(dst * in / out))."""
    return F.interpolate(ids[None, None].float(), size=size, mode="nearest")[0, 0].long()


def merge_regions(ids: torch.Tensor, feats: torch.Tensor, eps: float, distance: str, rule: str) -> torch.Tensor:
    """Regions whose mean DINO features chain within ``eps`` get one id (single linkage).

    Arguments:
        ids: (Ld,) region ids at the DINO grid.
        feats: (Ld, D) unit DINO features.
        distance: "max_minus" (max(G) - G over the cosine matrix G, upstream) or "one_minus" (1 - G).
        rule: the unsegmented rule (``clipsam.masks.unsegmented_id``); the unsegmented region takes no part. With
            two ids or fewer nothing merges.

    Returns:
        (Ld,) ids: the unsegmented region keeps its id, the others get MERGED_ID + component.
    """
    vals = torch.unique(ids)
    if len(vals) <= 2:
        return ids
    skip = unsegmented_id(ids.cpu().numpy(), rule)
    first = 1 if skip is not None and int(vals[0]) == skip else 0
    means = torch.stack([feats[ids == v].mean(0) for v in vals])
    g = F.normalize(means, dim=-1)[first:]
    sim = g @ g.T
    dist = (sim.max() if distance == "max_minus" else 1.0) - sim
    close = dist.double() <= eps if dist.dtype == torch.float16 else dist <= eps  # fp16: float64, as scikit-learn
    out = ids.clone()
    for v, lab in zip(vals[first:], components(close.cpu().numpy())):
        out[ids == v] = MERGED_ID + lab
    return out


def scope_attention(sim: torch.Tensor, ids: torch.Tensor, tau: float, rule: str) -> torch.Tensor:
    """(Ld, Ld) value attention: softmax over keys of tau * S where allowed: the same region (not the unsegmented
    one), or any pair touching the unsegmented region whose similarity exceeds the mean of S."""
    zero = unsegmented_id(ids.cpu().numpy(), rule)
    same = ids[:, None] == ids[None, :]
    if zero is None:
        allowed = same
    else:
        z = ids == zero
        allowed = (same & ~z[:, None]) | ((z[:, None] | z[None, :]) & (sim > sim.mean()))
    return torch.softmax(tau * sim.masked_fill(~allowed, float("-inf")), dim=-1)


class CorrClipEncoder:
    """CorrCLIP over an open_clip ``VisionTransformer`` and a timm DINO ViT (neither modified).

    Arguments:
        visual: open_clip CLIP model's ``.visual``.
        dino: ``clipsam.dense.dino.load_dino``'s model (any timm ViT with patch 8 works the same way).
        cfg: dense settings (``cfg.corrclip``).
        upstream_fp16: the order of upstream's fp16 arithmetic (``precision="fp16-upstream"``, with the models from
            ``clipsam.dense.upstream_fp16``): each window's CLIP runs as upstream's one joint sequence
            [mask class tokens; CLS; patches] with an additive mask (``joint_trunk``), not the batched trunk with the
            class tokens on the side (equal up to summation order, which fp16 rounding shows).
    """

    def __init__(self, visual, dino, cfg: DenseConfig, upstream_fp16: bool = False):
        self.base = DenseEncoder(visual, cfg)
        self.visual, self.dino, self.cfg = visual, dino, cfg
        self.upstream_fp16 = upstream_fp16
        self.patch, self.width, self.heads = self.base.patch, self.base.width, self.base.heads
        self.blocks = self.base.blocks
        self.spatial = spatial_blocks(cfg.corrclip, len(self.blocks))
        if max(self.spatial) >= len(self.blocks) - 1:
            raise ConfigError(
                f"corr_spatial_blocks {self.spatial} must be trunk blocks of this {len(self.blocks)}-block model "
                f"(< {len(self.blocks) - 1})"
            )
        if int(dino.patch_embed.proj.kernel_size[0]) != 8:
            raise ConfigError("CorrCLIP's DINO must have 8-pixel patches (ViT-B/8): windows are padded to 56 for it")
        self.timings: dict[str, float] | None = None  # set to {} to accumulate seconds per part (benchmarks)

    def _tick(self, part: str, t0: float, like: torch.Tensor) -> float:
        """With ``timings`` on: add the seconds since ``t0`` to ``part`` (after a device sync); the new start."""
        if self.timings is None:
            return t0
        if like.is_cuda:
            torch.cuda.synchronize(like.device)
        now = time.perf_counter()
        self.timings[part] = self.timings.get(part, 0.0) + now - t0
        return now

    def trunk(self, x: torch.Tensor):
        """Blocks 0 .. L-2 of the plain CLIP trunk: the output, the spatial mean, and each block's (k, v)."""
        states, keep = [], []
        for i, block in enumerate(self.blocks[:-1]):
            q, k, v = self.base.qkv(block, x)
            states.append((k, v))
            x = x + block.ls_1(self.base.out_proj(block, F.scaled_dot_product_attention(q, k, v)))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
            if i in self.spatial:
                keep.append(x)
        return x, torch.stack(keep).mean(0), states

    def mct_step(self, block, m: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allow: torch.Tensor):
        """One block for the mask class tokens m (NR, D): queries m, keys/values k, v (heads, 1+T, d) of the trunk
        tokens, each MCT restricted to ``allow`` (NR, 1+T); then the residual and the MLP."""
        n, d = m.shape
        h = block.ln_1(m)
        w, b = block.attn.in_proj_weight[:d], block.attn.in_proj_bias[:d]
        q = F.linear(h, w, b).view(n, self.heads, d // self.heads).transpose(0, 1)  # (heads, NR, d)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allow[None])
        m = m + block.ls_1(block.attn.out_proj(a.transpose(0, 1).reshape(n, d)))
        return m + block.ls_2(block.mlp(block.ln_2(m)))

    def masked_block(self, block, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A standard block on tokens x (B, n, D) whose attention adds ``mask`` (1, 1, n, n) to its logits."""
        q, k, v = self.base.qkv(block, x)
        x = x + block.ls_1(self.base.out_proj(block, F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def joint_trunk(self, x0: torch.Tensor, allow: torch.Tensor):
        """Upstream's form of the trunk and the class tokens: [MCTs; CLS; patches] (NR+1+T, D) through every block
        with −inf where ``allow`` (NR, 1+T) forbids an MCT's key, and everywhere from the original tokens to the MCTs.

        Returns:
            the MCTs after the last block (NR, D), the trunk output and the spatial mean (1+T, D).
        """
        nr, n = allow.shape
        seq = torch.cat([x0[:1].expand(nr, -1), x0])[None]
        blocked = torch.ones(nr + n, nr + n, dtype=torch.bool, device=x0.device)
        blocked[nr:, nr:] = False
        blocked[:nr, nr:] = ~allow
        mask = torch.zeros(blocked.shape, dtype=x0.dtype, device=x0.device).masked_fill(blocked, float("-inf"))
        keep = []
        for i, block in enumerate(self.blocks[:-1]):
            seq = self.masked_block(block, seq, mask[None, None])
            if i in self.spatial:
                keep.append(seq[0, nr:])
        mct = self.masked_block(self.blocks[-1], seq, mask[None, None])[0, :nr]
        return mct, seq[0, nr:], torch.stack(keep).mean(0)

    def window(self, feats, sim, ids, cls, x_main, x_sp, states, grid, dgrid):
        """Features (Ld, E) of one window from its DINO features (Ld, D_d) and similarities, its region ids (h, w),
        and its CLIP tensors: the embedded CLS (D,) (every MCT starts from it), the trunk output and the spatial
        mean (1+T, D), and per trunk block the (k, v) (heads, 1+T, d) of its input. ``upstream_fp16``: ``cls`` is
        the whole embedded token sequence (1+T, D), and the rest is computed by ``joint_trunk``."""
        corr, v = self.cfg.corrclip, self.visual
        (th, tw), (fh, fw) = grid, dgrid
        r = merge_regions(
            nearest(ids, dgrid).flatten(),
            feats,
            corr.corr_merge_eps,
            corr.corr_merge_distance,
            corr.corr_unsegmented,
        )
        a = scope_attention(sim, r, corr.corr_scope_tau, corr.corr_unsegmented)
        # mask class tokens over the regions at the CLIP grid
        rt = nearest(r.view(fh, fw), grid).flatten()
        tids = torch.unique(rt)
        allow = torch.cat([torch.ones(len(tids), 1, dtype=torch.bool, device=rt.device), rt[None] == tids[:, None]], 1)
        last = self.blocks[-1]
        if self.upstream_fp16:
            m, x_main, x_sp = self.joint_trunk(cls, allow)
        else:
            m = cls.expand(len(tids), -1)
            for block, (k, vv) in zip(self.blocks[:-1], states):
                m = self.mct_step(block, m, k, vv, allow)
            k11, v11 = self.base.qkv(last, x_main[None])[1:]
            m = self.mct_step(last, m, k11[0], v11[0], allow)
        cell = torch.searchsorted(tids, nearest(rt.view(th, tw), dgrid).flatten())
        # value-only last block on the DINO grid
        d = x_main.shape[-1]
        wv, bv = last.attn.in_proj_weight[2 * d :], last.attn.in_proj_bias[2 * d :]
        outs = []
        for z in (x_main, x_sp):
            val = F.linear(last.ln_1(z), wv, bv)[1:].T.reshape(1, d, th, tw)
            val = F.interpolate(val, size=dgrid, mode="bilinear", align_corners=False)[0].flatten(1).T
            outs.append(v.ln_post(last.attn.out_proj(a @ val)))
        w_sp, w_sem = corr.corr_branch_weights
        feat = outs[0] + w_sp * outs[1] + w_sem * v.ln_post(m)[cell]
        return feat @ v.proj

    @torch.inference_mode()
    def __call__(self, crops: torch.Tensor, text: torch.Tensor, ops=None, regions: torch.Tensor | None = None):
        """Logits on the DINO grid of a batch of equally sized crops.

        Arguments:
            crops: (B, 3, h, w) normalised crops (h, w multiples of 8 and 16 after padding).
            text: (Q, E) unit query embeddings.
            ops: unused (the ``DenseEncoder`` call signature).
            regions: (B, h, w) region ids per pixel (-1 = padding), or None: no regions (all unsegmented).

        Returns:
            (B, Q, h // 8, w // 8) logits.
        """
        b = crops.shape[0]
        if regions is None:
            regions = crops.new_zeros(b, *crops.shape[-2:])
        ids = regions.round().long()
        ids = torch.where(ids < 0, torch.full_like(ids, PAD_ID), ids)
        t0 = self._tick("dino", time.perf_counter(), crops)
        feats, dgrid = dino_qk_features(self.dino, crops)
        sims = feats @ feats.transpose(1, 2)
        t0 = self._tick("dino", t0, sims)
        x, grid = self.base.embed(crops)
        if self.upstream_fp16:  # the trunk runs per window, with its class tokens (``joint_trunk``)
            x_main = x_sp = x
            states: list = []
        else:
            x_main, x_sp, states = self.trunk(x)
        t0 = self._tick("clip_trunk", t0, x_main)
        out = []
        for i in range(b):
            per_block = [(k[i], v[i]) for k, v in states]
            cls = x[i] if self.upstream_fp16 else x[i, 0]
            f = self.window(feats[i], sims[i], ids[i], cls, x_main[i], x_sp[i], per_block, grid, dgrid)
            out.append(F.normalize(f, dim=-1) @ text.to(f.dtype).T)
        logits = torch.stack(out).transpose(1, 2).reshape(b, -1, *dgrid)
        self._tick("regions_last_block", t0, logits)
        return logits
