"""RF-CLIP's dense encoder (``method="rfclip"``): crops to patch-grid logits, ``docs/algorithms.md`` section 15.

    crops (B,3,H,W) --embed (DenseEncoder.embed)--> x (B,1+N,D)
      blocks 0..L-2: standard block, kk map K_l = softmax(s k kᵀ) kept (running sum), then ``denoise``; guide_l = x
      block L-1: standard block on x_in, ``denoise`` -> guide_{L-1}; CLS -> c = LN_post(.) proj      (B, E)
      G = mean of the guides;  x1 = enhance(x_in, G);  G2 = enhance(G, G)
      for z in (x1, G2): o_z = W_o(Ā_z v_z[1:])  with Ā_z = mean(K_0..K_{L-2}, K_{L-1}(z))[patches]   (B,N,D)
      P = LN_post(mean(o_x1, o_G2)) proj                                                              (B,N,E)
    window head: P/|P|, g = c/|c| Tᵀ (the window's or the whole member's c), adapted text T' per cluster,
      logits = (1 - gamma) P T'ᵀ + gamma g  -> (B, Q, h, w)

The host-side twin of the window head, for the ONNX Runtime backend, is ``clipsam.ops.rfclip``.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from ..config import DenseConfig
from ..errors import ConfigError
from ..ops.rfclip import cluster_queries, cluster_table
from .encoder import DenseEncoder


def denoise(
    x: torch.Tensor,
    grid: tuple[int, int],
    channels: tuple[int, ...],
    sigma: float,
    alpha: float,
    exact_identity: bool = False,
) -> torch.Tensor:
    """RF-CLIP's dimension-specific denoising of the patch tokens (CLS untouched).

    A patch is flagged when, after shifting its features to start at 0 and dividing by their sum, the largest
    share among ``channels`` exceeds ``sigma / D``. Flagged patches take the mean of their 3x3 neighbourhood
    (zero padding, always divided by 9); then ``x <- (1 - alpha) x + alpha f'`` for every patch.

    Arguments:
        x: (B, 1 + N, D) tokens, N = h * w.
        grid: (h, w).
        exact_identity: correction: leave unflagged patches unchanged (upstream blends them with themselves).

    Returns:
        (B, 1 + N, D) denoised tokens.
    """
    b, _, d = x.shape
    d = int(d)  # the width: a constant when traced for ONNX (the conv weight's shape, the threshold sigma / D)
    h, w = grid
    f = x[:, 1:]
    shifted = f - f.amin(-1, keepdim=True)
    share = shifted / shifted.sum(-1, keepdim=True).clamp(min=1e-8)
    flagged = share[..., list(channels)].amax(-1) > sigma * (1.0 / d)  # (B, N)
    planes = f.transpose(1, 2).reshape(b, d, h, w)
    weight = torch.full((d, 1, 3, 3), 1.0 / 9.0, dtype=f.dtype, device=f.device)
    avg = F.conv2d(planes, weight, padding=1, groups=d).reshape(b, d, h * w).transpose(1, 2)
    fp = torch.where(flagged[..., None], avg, f)
    if exact_identity:
        patches = torch.where(flagged[..., None], (1 - alpha) * f + alpha * fp, f)
    else:
        patches = (1 - alpha) * f + alpha * fp
    return torch.cat([x[:, :1], patches], dim=1)


def pairwise_cosine(g: torch.Tensor, rows: int = 64) -> torch.Tensor:
    """(B, N, D) -> (B, N, N) cosine similarities as ``F.cosine_similarity`` computes them on broadcast pairs (upstream's
    form): each vector divided by max(‖·‖, 1e-8), elementwise products rounded to the dtype, then summed over D. In
    blocks of ``rows`` rows, so that memory stays (B, rows, N, D)."""
    gn = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    blocks = [(gn[:, i : i + rows, None, :] * gn[:, None, :, :]).sum(-1) for i in range(0, gn.shape[1], rows)]
    return torch.cat(blocks, dim=1)


def enhance(x: torch.Tensor, guide: torch.Tensor, beta: float, broadcast_cosine: bool = False) -> torch.Tensor:
    """Patches of x (B, 1+N, D) replaced by ``S x_patches`` with S the guide's patch cosine similarities, entries
    below ``beta`` zeroed (rows not renormalised); CLS kept. ``broadcast_cosine``: S by ``pairwise_cosine`` (upstream's
    rounding in fp16) instead of normalise-and-multiply."""
    if broadcast_cosine:
        s = pairwise_cosine(guide[:, 1:])
    else:
        g = F.normalize(guide[:, 1:], dim=-1, eps=1e-8)
        s = g @ g.transpose(1, 2)
    s = torch.where(s < beta, torch.zeros_like(s), s)
    return torch.cat([x[:, :1], s @ x[:, 1:]], dim=1)


def adapt_text(
    patches: torch.Tensor, text: torch.Tensor, sims: torch.Tensor, table: torch.Tensor, alpha: float, topk: int
) -> torch.Tensor:
    """``clipsam.ops.rfclip.adapt_text`` on the device: (B,N,E) unit patches, (Q,E) text, (B,Q) global similarities,
    (K,M) cluster table -> (B,Q,E) adjusted text."""
    b, n, e = patches.shape
    valid = table >= 0
    g = sims[:, table.clamp(min=0)].masked_fill(~valid, float("-inf"))  # (B, K, M)
    chosen = table.expand(b, -1, -1).gather(-1, g.argmax(-1, keepdim=True))[..., 0]  # (B, K): first max
    t = F.normalize(text[chosen], dim=-1)  # (B, K, E)
    sim = F.normalize(patches, dim=-1) @ t.transpose(1, 2)  # (B, N, K)
    top = sim.topk(min(topk, n), dim=1).indices  # (B, k, K)
    picked = patches.gather(1, top.reshape(b, -1, 1).expand(-1, -1, e)).reshape(b, top.shape[1], -1, e)
    mv = F.normalize(picked.mean(1), dim=-1)  # (B, K, E)
    new = F.normalize((1 - alpha) * t + alpha * mv, dim=-1)
    out = text.to(new.dtype).expand(b, -1, -1).clone()
    return out.scatter(1, chosen[..., None].expand(-1, -1, e), new)


class RFClipEncoder:
    """RF-CLIP over an open_clip ``VisionTransformer`` (not modified).

    Arguments:
        visual: open_clip CLIP model's ``.visual``.
        cfg: dense settings (``cfg.rfclip``; ``cfg.schedule.slide_crop`` decides where the global embedding comes
            from).
        upstream_fp16: the order of upstream's fp16 arithmetic (``precision="fp16-upstream"``, with the model from
            ``clipsam.dense.upstream_fp16.half_clip``): attention as explicit ``softmax((q s) kᵀ) v``, the guides and
            kk maps averaged with one ``stack().mean(0)`` each, the enhancement's cosines by ``pairwise_cosine``. Off:
            the same values in float32 by SDPA, running sums and a matrix product.
    """

    def __init__(self, visual, cfg: DenseConfig, upstream_fp16: bool = False):
        self.base = DenseEncoder(visual, cfg)  # embedding, q/k/v and output projections
        self.visual, self.cfg = visual, cfg
        self.upstream_fp16 = upstream_fp16
        self.patch, self.width, self.heads = self.base.patch, self.base.width, self.base.heads
        self.blocks = self.base.blocks
        rf = cfg.rfclip
        if max(rf.rf_sink_channels) >= self.width:
            raise ConfigError(
                f"rf_sink_channels {rf.rf_sink_channels} name channels beyond this model's width {self.width}. "
                "RF-CLIP's channels are those of ViT-B/16 (width 768); for another backbone pass its own "
                "rf_sink_channels=(...)"
            )
        self._tables: dict = {}

    @property
    def fp16_final(self) -> bool:
        """Whether upstream's fp16 run upsamples the image's logits to the original size in fp16 (whole-image presets:
        the window logits are never summed into float32)."""
        return self.upstream_fp16 and self.cfg.schedule.slide_crop == 0

    @property
    def fp16_tail(self) -> bool:
        """Whether upstream keeps the logits in fp16 up to the softmax: in its fp16 run, for whole-image presets (the
        window logits are never summed into float32) and after PAMR (cast back to the text's dtype)."""
        return self.upstream_fp16 and (self.cfg.schedule.slide_crop == 0 or self.cfg.post.pamr_iters > 0)

    # -- encoder -------------------------------------------------------------------------------------
    def _denoise(self, x: torch.Tensor, grid) -> torch.Tensor:
        rf = self.cfg.rfclip
        return denoise(
            x, grid, rf.rf_sink_channels, rf.rf_sink_sigma, rf.rf_denoise_alpha, rf.rf_denoise_exact_identity
        )

    def _block(self, block, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A standard block; also returns its kk map softmax(s k kᵀ) (B, heads, 1+N, 1+N)."""
        q, k, v = self.base.qkv(block, x)
        s = q.shape[-1] ** -0.5
        kk = torch.softmax((k * s) @ k.transpose(-1, -2), dim=-1)
        if self.upstream_fp16:
            a = torch.softmax((q * s) @ k.transpose(-1, -2), dim=-1) @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v)
        x = x + block.ls_1(self.base.out_proj(block, a))
        return x + block.ls_2(block.mlp(block.ln_2(x))), kk

    def encode(self, crops: torch.Tensor, cls_only: bool = False):
        """(B,3,H,W) -> patch features P (B, N, E) (None with ``cls_only``), CLS embedding c (B, E), grid (h, w)."""
        v, rf = self.visual, self.cfg.rfclip
        x, grid = self.base.embed(crops)
        kk_sum, guide_sum = None, None
        kks, guides = [], []  # upstream_fp16: every map and guide, for one stack().mean(0) each
        for block in self.blocks[:-1]:
            x, kk = self._block(block, x)
            x = self._denoise(x, grid)
            if self.upstream_fp16:
                kks.append(kk[:, :, 1:, 1:])
                guides.append(x)
                continue
            kk_sum = kk if kk_sum is None else kk_sum + kk
            guide_sum = x if guide_sum is None else guide_sum + x
        last = self.blocks[-1]
        x_last = self._denoise(self._block(last, x)[0], grid)
        cls = v.ln_post(x_last[:, 0]) @ v.proj
        if cls_only:
            return None, cls, grid
        if self.upstream_fp16:
            guide = torch.stack([*guides, x_last]).mean(0)
        else:
            assert kk_sum is not None and guide_sum is not None  # the trunk has at least one block before the last
            guide = (guide_sum + x_last) / len(self.blocks)
        outs = []
        beta, cos = rf.rf_enhance_beta, self.upstream_fp16
        for z in (enhance(x, guide, beta, cos), enhance(guide, guide, beta, cos)):
            q, k, val = self.base.qkv(last, z)
            s = q.shape[-1] ** -0.5
            kk_last = torch.softmax((k * s) @ k.transpose(-1, -2), dim=-1)
            if self.upstream_fp16:
                a = torch.stack([*kks, kk_last[:, :, 1:, 1:]]).mean(0)
            else:
                assert kk_sum is not None
                a = ((kk_sum + kk_last) / len(self.blocks))[:, :, 1:, 1:]
            if rf.rf_renormalise_attention:
                a = a / a.sum(-1, keepdim=True)
            outs.append(self.base.out_proj(last, a @ val[:, :, 1:]))
        patches = v.ln_post((outs[0] + outs[1]) / 2) @ v.proj
        return patches, cls, grid

    # -- text side -----------------------------------------------------------------------------------
    def cluster_table(self, text: torch.Tensor) -> torch.Tensor:
        """(K, M) cluster table of the queries (``clipsam.ops.rfclip``), cached per text and threshold. fp16 text
        is clustered on float64 distances (scikit-learn's rule for fp16 input, upstream's fp16 run)."""
        arr = text.detach().cpu().numpy() if text.dtype == torch.float16 else text.detach().float().cpu().numpy()
        t = self.cfg.rfclip.rf_cluster_threshold
        key = (hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest(), arr.shape, t, str(text.device))
        table = self._tables.get(key)
        if table is None:
            if len(self._tables) > 16:
                self._tables.clear()
            table = torch.from_numpy(cluster_table(cluster_queries(arr, t))).to(text.device)
            self._tables[key] = table
        return table

    def member_context(self, pixels: torch.Tensor) -> dict | None:
        """The whole member's CLS embedding {"global_embedding": (E,)} for sliding windows that take the image's
        global semantics (``rf_global_source="image"``), else None (windows use their own CLS)."""
        if self.cfg.schedule.slide_crop == 0 or self.cfg.rfclip.rf_global_source != "image":
            return None
        return {"global_embedding": self.encode(pixels[None], cls_only=True)[1][0]}

    @torch.inference_mode()
    def __call__(
        self, crops: torch.Tensor, text: torch.Tensor, ops=None, global_embedding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Patch-grid logits of a batch of equally sized crops.

        Arguments:
            crops: (B, 3, H, W) normalised crops.
            text: (Q, E) unit query embeddings.
            ops: unused (the ``DenseEncoder`` call signature).
            global_embedding: (B, E) CLS embeddings of the windows' whole images, or None: each window's own.

        Returns:
            (B, Q, H // p, W // p) logits.
        """
        rf = self.cfg.rfclip
        patches, cls, grid = self.encode(crops)
        if global_embedding is not None:
            cls = global_embedding.to(cls.dtype)
        p = patches / patches.norm(dim=-1, keepdim=True)
        t = text.to(p.dtype)
        g = (cls / cls.norm(dim=-1, keepdim=True)) @ t.T  # (B, Q)
        adjusted = adapt_text(p, t, g, self.cluster_table(text), rf.rf_text_alpha, rf.rf_topk)
        logits = p @ adjusted.transpose(1, 2)  # (B, N, Q)
        logits = logits * (1 - rf.rf_global_weight) + g[:, None] * rf.rf_global_weight
        return logits.transpose(1, 2).reshape(crops.shape[0], -1, grid[0], grid[1])
