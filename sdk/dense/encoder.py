"""Dense CLIP encoder: image crops to patch-grid logits with the last-block variants, RCS and SFR.

Data flow for a batch of crops (``docs/algorithms.md``: the encoder, the last block, ResCLIP):

    crops (B,3,H,W) --conv1--> tokens (B,1+N,D) + pos (bicubic +0.1 resize when the grid is not the native one)
      --ln_pre--> blocks 0..L-2 (q,k of the RCS blocks kept, (L_rcs,B,heads,1+N,d))
      --last block (variant; RCS blend; SFR: pass 1 -> ``clipsam.ops.base.sfr_feedback`` -> pass 2)--> ln_post @ proj
      --patch tokens, L2-normalised (optional kNN calibration), @ text^T--> logits (B,Q,h,w)

``calibration="excel"`` swaps the trunk and last block for ExCEL's two-path forward (``calibration.svc_tokens``).

Only the last block runs twice under SFR; the trunk is computed once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import DenseConfig
from ..errors import ConfigError
from ..ops.base import sfr_feedback
from .calibration import knn_calibrate, svc_tokens
from .ops import TorchOps


class DenseEncoder:
    """Wraps an open_clip ``VisionTransformer`` (not modified) for dense prediction.

    Arguments:
        visual: ``open_clip`` CLIP model's ``.visual`` (a ViT with ``conv1``, ``transformer.resblocks``...).
        cfg: dense settings (base, residual, RCS/SFR parameters).
    """

    def __init__(self, visual, cfg: DenseConfig):
        if not hasattr(visual, "conv1") or not hasattr(visual, "transformer"):
            raise TypeError(
                "DenseEncoder needs an open_clip VisionTransformer (ViT); ResNet CLIP models are not supported"
            )
        self.visual = visual
        self.cfg = cfg
        self.patch = int(visual.conv1.kernel_size[0])
        self.width = int(visual.conv1.out_channels)
        self.blocks = list(visual.transformer.resblocks)
        self.heads = self.blocks[0].attn.num_heads
        att, cal = cfg.attention, cfg.calibration
        if att.rcs and max(att.rcs_layers) >= len(self.blocks) - 1:
            raise ConfigError(
                f"rcs_layers {att.rcs_layers} need at least {max(att.rcs_layers) + 2} blocks; this model has "
                f"{len(self.blocks)} (the RCS layers are 0-based trunk blocks, at most {len(self.blocks) - 2})"
            )
        if cal.mode == "excel" and cal.blocks > len(self.blocks):
            raise ConfigError(f"calibration_blocks={cal.blocks} exceeds this model's {len(self.blocks)} blocks")
        n = visual.positional_embedding.shape[0] - 1
        self.native_grid = int(round(n**0.5))
        self._pos_cache: dict = {}

    # -- embedding -------------------------------------------------------------------------------------
    def pos_embed(self, gh: int, gw: int, like: torch.Tensor) -> torch.Tensor:
        """(1 + gh*gw, D) positional embedding for a gh x gw grid: the native one, or its bicubic resize with scale
        factors ((gh + 0.1) / n, (gw + 0.1) / n) as upstream (cached per grid, device and dtype)."""
        pos = self.visual.positional_embedding
        if gh * gw == pos.shape[0] - 1:  # upstream interpolates only when the token count differs
            return pos.to(like.dtype)
        key = (gh, gw, like.device, like.dtype)
        cached = self._pos_cache.get(key)
        if cached is None:
            n = self.native_grid
            grid = pos[1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(
                grid,
                mode="bicubic",
                scale_factor=((gh + 0.1) / n, (gw + 0.1) / n),
                align_corners=False,
                recompute_scale_factor=False,
            )
            grid = grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)
            cached = torch.cat([pos[:1], grid], dim=0).to(like.dtype).detach()
            self._pos_cache[key] = cached
        return cached

    def embed(self, crops: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B,3,H,W) -> tokens (B, 1+h*w, D) after ln_pre, and the grid (h, w)."""
        v = self.visual
        x = v.conv1(crops.to(v.conv1.weight.dtype))  # (B, D, h, w); rows/cols beyond the last whole patch dropped
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed(gh, gw, x)
        return v.ln_pre(x), (gh, gw)

    # -- blocks ----------------------------------------------------------------------------------------
    def qkv(self, block, x: torch.Tensor):
        """Per-head q, k, v (B, heads, N1, d) of ``block``'s attention for tokens x (B, N1, D) (ln_1 applied)."""
        b, n, d = x.shape
        qkv = F.linear(block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v  # (B, heads, N1, d) each

    def out_proj(self, block, a: torch.Tensor) -> torch.Tensor:
        """``block``'s output projection of per-head attention outputs a (B, heads, N1, d) -> (B, N1, D)."""
        b, h, n, dh = a.shape
        return block.attn.out_proj(a.transpose(1, 2).reshape(b, n, h * dh))

    def trunk(self, x: torch.Tensor):
        """Blocks 0..L-2. Returns x (B,N1,D) and (rcs_q, rcs_k) stacked (L_rcs,B,heads,N1,d) or (None, None)."""
        att = self.cfg.attention
        keep = set(att.rcs_layers) if att.rcs else set()
        rq, rk = [], []
        for i, block in enumerate(self.blocks[:-1]):
            q, k, v = self.qkv(block, x)
            if i in keep:
                rq.append(q)
                rk.append(k)
            a = F.scaled_dot_product_attention(q, k, v)
            x = x + block.ls_1(self.out_proj(block, a))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        if not keep:
            return x, (None, None)
        order = sorted(keep)
        idx = {layer: j for j, layer in enumerate(order)}
        return x, (torch.stack([rq[idx[i]] for i in order]), torch.stack([rk[idx[i]] for i in order]))

    def last_block(self, x: torch.Tensor, grid, rcs, sfr_term: torch.Tensor | None, shared: dict | None = None):
        """The variant last block; returns tokens (B, N1, D) before ln_post.

        ``sfr_term``: SFR's lambda * S_hat (B, N1, N1) fp16 for the second pass, else None. ``shared``: a dict that
        keeps what does not depend on ``sfr_term`` (the block's q, k, v and, on the CPU's reference path, RCS's
        averaged maps) from ResCLIP's first pass for its second: the same values, computed once.
        """
        from clipsam.kernels import rcs_attention, rcs_mean_maps

        att = self.cfg.attention
        block = self.blocks[-1]
        reuse = shared is not None
        shared = {} if shared is None else shared
        if "qkv" not in shared:
            q, k, v = shared["qkv"] = self.qkv(block, x)
            cpu_rcs = reuse and rcs[0] is not None and x.device.type == "cpu"  # CUDA: the fused kernel recomputes
            shared["rcs_mean"] = rcs_mean_maps(rcs[0], rcs[1], q.shape[-1] ** -0.5) if cpu_rcs else None
        q, k, v = shared["qkv"]
        a = rcs_attention(
            q,
            k,
            v,
            base=att.base,
            scale=q.shape[-1] ** -0.5,
            window=(grid[0], grid[1], float(self.cfg.feedback.gaussian_std)) if att.base == "naclip" else None,
            sfr_term=sfr_term,
            sfr_weights=att.sfr_weights if sfr_term is not None else None,
            rcs_q=rcs[0],
            rcs_k=rcs[1],
            rcs_weights=att.rcs_weights if rcs[0] is not None else None,
            rcs_mean=shared["rcs_mean"],
        )
        out = self.out_proj(block, a)
        if not att.residual:
            return out
        x = x + out
        return x + block.mlp(block.ln_2(x))

    def patch_logits(self, tokens: torch.Tensor, grid, text: torch.Tensor, calibrate: bool = False) -> torch.Tensor:
        """tokens (B,N1,D), text (Q,E) -> (B, Q, h, w) cosine logits (``calibrate``: final logits, kNN applies)."""
        v = self.visual
        f = v.ln_post(tokens) @ v.proj
        f = f[:, 1:]
        f = f / f.norm(dim=-1, keepdim=True)
        cal = self.cfg.calibration
        if calibrate and cal.mode == "knn":
            f = knn_calibrate(f, text, self.cfg.post.logit_scale, cal.knn_k, cal.knn_quantile)
        logits = f @ text.to(f.dtype).T  # (B, N, Q)
        return logits.transpose(1, 2).reshape(tokens.shape[0], -1, grid[0], grid[1])

    # -- full forward ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def __call__(self, crops: torch.Tensor, text: torch.Tensor, ops: TorchOps | None = None) -> torch.Tensor:
        """Patch-grid logits of a batch of equally sized crops.

        Arguments:
            crops: (B, 3, H, W) normalised crops, H and W >= patch size.
            text: (Q, E) unit-norm query embeddings.
            ops: host operations for SFR's first pass (default: ``TorchOps`` on the crops' device).

        Returns:
            (B, Q, H // p, W // p) logits.
        """
        cfg = self.cfg
        x, grid = self.embed(crops)
        if cfg.calibration.mode == "excel":  # ExCEL SVC replaces the last-block variant (dense/calibration.py)
            return self.patch_logits(svc_tokens(self, x, cfg.calibration.blocks), grid, text)
        x, rcs = self.trunk(x)
        if cfg.attention.sfr:
            ops = ops or TorchOps(crops.device)
            shared: dict = {}  # the last block's q, k, v and RCS maps, the same in both passes
            first = self.patch_logits(self.last_block(x, grid, rcs, None, shared), grid, text)
            s_hat = sfr_feedback(ops, first, crops, self.patch, cfg)
            term = ops.sfr_term(s_hat, cfg.attention.sfr_weights[1])
            return self.patch_logits(self.last_block(x, grid, rcs, term, shared), grid, text, calibrate=True)
        return self.patch_logits(self.last_block(x, grid, rcs, None), grid, text, calibrate=True)
