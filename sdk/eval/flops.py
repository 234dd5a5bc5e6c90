"""Analytic FLOP counts of the dense pipeline, and the machine's measured matmul peak (for roofline fractions).

Conventions: one multiply-add is 2 FLOPs; only matmul-like work is counted in the encoder (layer norms,
softmax, GELU and residual adds are O(N*D) and left out, as gpt-fast and the Triton tutorials do).
For a window whose patch grid is h x w, N = h*w patches and N1 = 1 + N tokens, width D, MLP width M:

    patch embed      2 * N * (3 p^2) * D
    block            qkv 6 N1 D^2 + scores 2 N1^2 D per score matmul + A.V 2 N1^2 D + proj 2 N1 D^2 + MLP 4 N1 D M
    trunk            (L - 1) full blocks (one score matmul each)
    last block       qkv + scores (clip/clearclip/naclip 1, sclip 2: qq^T and kk^T) + RCS (one q_l k_l^T per
                     RCS layer, recomputed by the last-block attention) + A.V + proj, + MLP only with the
                     residual (clip, sclip)
    head             ln_post @ proj 2 N1 D E + logits 2 N E Q  (E: embedding width, Q: queries)
    SFR              one more last block + head, PAMR of the first pass at crop size (below), row blur 2 N^2 k
    PAMR (estimate)  iterations 2 K Q H W (K = 8 neighbours per dilation) + affinities ~ H W (13 K + 9 S)
                     (S = 9 samples per dilation, 3 image channels)

RF-CLIP (``rfclip``): every block also computes its kk map (2 score matmuls); the last block runs once in full
and twice more as value-only kk attention over the enhanced tokens (qkv, kk, A.V, proj each), plus the two guide
similarity products of ``enhance`` (4 N^2 D each) and, with sliding windows and the whole image's global semantics,
one more pass of all blocks over each whole member. CorrCLIP (``corrclip``): DINO ViT-B/8 over the window
(``VIT_B8``: patch embed, 11 blocks and the last qkv over 1 + Ld tokens, Ld = (h/8)(w/8)), the similarity
2 Ld^2 D_d, the CLIP trunk, two value branches (value projection 2 N1 D^2, A v 2 Ld^2 D, out_proj 2 Ld D^2) and the
head on the DINO grid; the mask class tokens (a few queries per block) are left out. Its SAM2 automatic masks add
``sam2_flops(points_per_side^2)`` per image.

Windows come from the config exactly as the scheduler plans them (per scale and flip: ``resize_shape`` then
``window_grid``); output PAMR runs per member. The text encoder (computed once per vocabulary and cached)
is reported apart. SAM2 is an *estimate* from parameter counts: 2 * params * tokens (Hiera's stride-16
stage, 64 x 64 = 4096 tokens at 1024 px, holds most of its blocks; the mask decoder attends to the same
4096 image tokens once per prompt).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..pipeline.windows import pad_to_patch, window_grid
from ..preprocess import resize_shape


@dataclass(frozen=True)
class VitSpec:
    """Shape of a CLIP vision tower."""

    width: int  # D
    layers: int  # L
    heads: int
    patch: int  # p
    mlp: int  # M, MLP hidden width
    embed_dim: int  # E, output of visual.proj

    @classmethod
    def from_visual(cls, visual) -> VitSpec:
        """Read the shape of an open_clip ``VisionTransformer``."""
        blocks = visual.transformer.resblocks
        return cls(
            int(visual.conv1.out_channels),
            len(blocks),
            int(blocks[0].attn.num_heads),
            int(visual.conv1.kernel_size[0]),
            int(blocks[0].mlp.c_fc.out_features),
            int(visual.proj.shape[1]),
        )


@dataclass(frozen=True)
class TextSpec:
    """Shape of a CLIP text tower."""

    width: int
    layers: int
    mlp: int
    context: int  # tokens per prompt (every position is computed, causal mask or not)
    embed_dim: int

    @classmethod
    def from_model(cls, model) -> TextSpec:
        blocks = model.transformer.resblocks
        return cls(
            int(model.transformer.width),
            len(blocks),
            int(blocks[0].mlp.c_fc.out_features),
            int(model.context_length),
            int(model.text_projection.shape[1]),
        )


VIT_B16 = VitSpec(width=768, layers=12, heads=12, patch=16, mlp=3072, embed_dim=512)
VIT_L14 = VitSpec(width=1024, layers=24, heads=16, patch=14, mlp=4096, embed_dim=768)
VIT_B8 = VitSpec(width=768, layers=12, heads=12, patch=8, mlp=3072, embed_dim=0)  # CorrCLIP's DINO ViT-B/8


@dataclass
class FlopCount:
    """FLOPs of one image, split by part; ``total`` excludes the (cached) text encoder."""

    parts: dict[str, float] = field(default_factory=dict)  # embed, trunk, last, head, sfr, pamr, sam2
    windows: int = 0
    window_shapes: list[tuple[int, int]] = field(default_factory=list)  # (h, w) pixels fed to the encoder
    input_hw: tuple[int, int] = (0, 0)  # the resized image (at scale 1.0 when the ensemble has it)

    @property
    def total(self) -> float:
        return float(sum(self.parts.values()))

    @property
    def gflop(self) -> float:
        return self.total / 1e9

    def add(self, part: str, flops: float) -> None:
        self.parts[part] = self.parts.get(part, 0.0) + float(flops)


def block_flops(n1: int, width: int, mlp: int, score_matmuls: int = 1, with_mlp: bool = True) -> float:
    """Matmul FLOPs of one transformer block over ``n1`` tokens."""
    d = width
    f = 6 * n1 * d * d + score_matmuls * 2 * n1 * n1 * d + 2 * n1 * n1 * d + 2 * n1 * d * d
    return float(f + (4 * n1 * d * mlp if with_mlp else 0))


def pamr_flops(h: int, w: int, channels: int, iters: int, dilations, image_channels: int = 3) -> float:
    """Estimated FLOPs of PAMR over an h x w mask of ``channels`` channels (see the module docstring)."""
    if iters <= 0:
        return 0.0
    k, s = 8 * len(dilations), 9 * len(dilations)
    affinity = h * w * image_channels * (3 * k + 3 * s) + h * w * 4 * k
    return float(2 * iters * k * channels * h * w + affinity)


def window_flops(
    spec: VitSpec, grid: tuple[int, int], cfg, num_queries: int, crop_hw: tuple[int, int]
) -> dict[str, float]:
    """FLOPs of one window with patch grid ``grid`` = (h, w) (pixels ``crop_hw``), split by part."""
    n = grid[0] * grid[1]
    n1, d = n + 1, spec.width
    if cfg.attention.base == "rfclip":
        return _rfclip_window(spec, n, num_queries)
    if cfg.attention.base == "corrclip":
        return _corrclip_window(spec, grid, crop_hw, num_queries)
    scores = (2 if cfg.attention.base == "sclip" else 1) + (len(cfg.attention.rcs_layers) if cfg.attention.rcs else 0)
    last = block_flops(n1, d, spec.mlp, scores, with_mlp=cfg.attention.residual)
    head = 2 * n1 * d * spec.embed_dim + 2 * n * spec.embed_dim * num_queries
    out = {
        "embed": float(2 * n * 3 * spec.patch**2 * d),
        "trunk": (spec.layers - 1) * block_flops(n1, d, spec.mlp),
        "last": last,
        "head": float(head),
    }
    if cfg.attention.sfr:
        k = min(n, int(6 * cfg.feedback.gaussian_std + 1))
        k += 1 - k % 2
        out["sfr"] = (
            last
            + head
            + 2.0 * n * n * k
            + pamr_flops(
                crop_hw[0], crop_hw[1], num_queries, cfg.feedback.sfr_pamr_iters, cfg.feedback.sfr_pamr_dilations
            )
        )
    return out


def _rfclip_window(spec: VitSpec, n: int, num_queries: int) -> dict[str, float]:
    n1, d, e = n + 1, spec.width, spec.embed_dim
    value_pass = 6 * n1 * d * d + 2 * n1 * n1 * d + 2 * n * n * d + 2 * n * d * d
    return {
        "embed": float(2 * n * 3 * spec.patch**2 * d),
        "trunk": (spec.layers - 1) * block_flops(n1, d, spec.mlp, 2),
        "last": block_flops(n1, d, spec.mlp, 2) + 2 * (4 * n * n * d) + 2 * value_pass,
        "head": float(2 * n * d * e + 4 * n * e * num_queries),
    }


def _corrclip_window(
    spec: VitSpec, grid: tuple[int, int], crop_hw: tuple[int, int], num_queries: int
) -> dict[str, float]:
    n = grid[0] * grid[1]
    n1, d, e = n + 1, spec.width, spec.embed_dim
    dn = VIT_B8
    ld = (crop_hw[0] // dn.patch) * (crop_hw[1] // dn.patch)
    dd = dn.width
    return {
        "dino": float(2 * ld * 3 * dn.patch**2 * dd)
        + (dn.layers - 1) * block_flops(ld + 1, dd, dn.mlp)
        + 6 * (ld + 1) * dd * dd
        + 2 * ld * ld * dd,
        "embed": float(2 * n * 3 * spec.patch**2 * d),
        "trunk": (spec.layers - 1) * block_flops(n1, d, spec.mlp),
        "last": float(2 * (2 * n1 * d * d + 2 * ld * ld * d + 2 * ld * d * d)),
        "head": float(2 * ld * d * e + 2 * ld * e * num_queries),
    }


def _crops(h: int, w: int, cfg, patch: int) -> list[tuple[int, int]]:
    if cfg.schedule.slide_crop <= 0:
        return [(h, w)]
    shapes = []
    for y1, y2, x1, x2 in window_grid(h, w, cfg.schedule.slide_crop, cfg.schedule.slide_stride):
        ch, cw = y2 - y1, x2 - x1
        if cfg.schedule.pad_crops:
            left, right, top, bottom = pad_to_patch(ch, cw, cfg.schedule.pad_multiple or patch)
            ch, cw = ch + top + bottom, cw + left + right
        shapes.append((ch, cw))
    return shapes


def image_flops(spec: VitSpec, cfg, image_hw: tuple[int, int], num_queries: int, sam2: float = 0.0) -> FlopCount:
    """FLOPs of segmenting one image of ``image_hw`` = (H, W) original pixels with DenseConfig ``cfg``.

    Every member of the ensemble (each of ``cfg.schedule.scales``, twice with ``cfg.schedule.flip``) is planned as the
    scheduler plans it: sides scaled and rounded, ``resize_shape``, then its windows; output PAMR runs per
    member at the original size.

    Arguments:
        spec: the vision tower (``VIT_B16``, ``VIT_L14`` or ``VitSpec.from_visual``).
        num_queries: Q, text queries (synonyms included).
        sam2: FLOPs of SAM2 refinement to add (``sam2_flops``), 0 without refinement.
    """
    flips = 2 if getattr(cfg, "flip", False) else 1
    fc = FlopCount()
    for scale in getattr(cfg, "scales", (1.0,)):
        short, long = int(round(cfg.schedule.short_side * scale)), int(round(cfg.schedule.long_side * scale))
        h, w = resize_shape(image_hw[0], image_hw[1], short, long)
        if scale == 1.0 or fc.input_hw == (0, 0):
            fc.input_hw = (h, w)
        for _ in range(flips):
            for ch, cw in _crops(h, w, cfg, spec.patch):
                fc.windows += 1
                fc.window_shapes.append((ch, cw))
                grid = (ch // spec.patch, cw // spec.patch)
                for part, f in window_flops(spec, grid, cfg, num_queries, (ch, cw)).items():
                    fc.add(part, f)
            if (
                cfg.attention.base == "rfclip"
                and cfg.schedule.slide_crop > 0
                and cfg.rfclip.rf_global_source == "image"
            ):
                n = (h // spec.patch) * (w // spec.patch)  # the whole member's CLS embedding
                fc.add(
                    "global",
                    float(2 * n * 3 * spec.patch**2 * spec.width)
                    + spec.layers * block_flops(n + 1, spec.width, spec.mlp, 2),
                )
            if cfg.post.pamr_iters > 0:
                fc.add(
                    "pamr",
                    pamr_flops(image_hw[0], image_hw[1], num_queries, cfg.post.pamr_iters, cfg.post.pamr_dilations),
                )
    if sam2:
        fc.add("sam2", sam2)
    return fc


def text_flops(spec: TextSpec, prompts: int) -> float:
    """FLOPs of encoding ``prompts`` prompts (queries x templates), final projection of the EOT token included."""
    return float(
        prompts * (spec.layers * block_flops(spec.context, spec.width, spec.mlp) + 2 * spec.width * spec.embed_dim)
    )


# SAM 2.1 (image encoder, prompt encoder + mask decoder) parameter counts, counted from the models
# sam2 1.1.0's build_sam2 builds for these configs; the memory modules (unused on single images) are left out.
SAM2_PARAMS: dict[str, tuple[int, int]] = {
    "sam2.1_hiera_t": (27_219_136, 4_221_329),
    "sam2.1_hiera_s": (34_316_992, 4_221_329),
    "sam2.1_hiera_b+": (69_106_816, 4_221_329),
    "sam2.1_hiera_l": (212_703_280, 4_221_329),
}
# SAM 2.0 (CorrCLIP's automatic masks use sam2_hiera_l): the same encoder and decoder shapes as 2.1
SAM2_PARAMS.update({name.replace("sam2.1_", "sam2_"): counts for name, counts in list(SAM2_PARAMS.items())})


def sam2_flops(
    num_prompts: int,
    model: str = "sam2.1_hiera_t",
    encoder_params: float | None = None,
    decoder_params: float | None = None,
    image_tokens: int = 64 * 64,
) -> float:
    """Estimated SAM2 FLOPs for one image: 2 * encoder_params * tokens + prompts * 2 * decoder_params * tokens.

    Arguments:
        num_prompts: prompts decoded for the image (0: the image is not encoded at all).
        model: key of ``SAM2_PARAMS``, used when the parameter counts are not given.
        encoder_params, decoder_params: counted from a built model (``sum(p.numel() ...)``) when available.
    """
    if num_prompts <= 0:
        return 0.0
    enc = SAM2_PARAMS[model][0] if encoder_params is None else encoder_params
    dec = SAM2_PARAMS[model][1] if decoder_params is None else decoder_params
    return float(2 * enc * image_tokens + num_prompts * 2 * dec * image_tokens)


_PEAK_CACHE: dict = {}


def measure_matmul_peak(device="cpu", dtype: str = "fp32", n: int | None = None, seconds: float = 0.5) -> float:
    """The measured dense matmul throughput of ``device`` in GFLOP/s (best of a short timed loop; cached).

    Arguments:
        device: "cpu" or "cuda[:N]".
        dtype: "fp32", "fp16" or "bf16" (CPU fp16 is not meaningful; use fp32 there).
        n: square matrix size (default 2048 on the CPU, 8192 on CUDA).
        seconds: rough time budget of the timed loop.
    """
    import torch

    dev = torch.device(device)
    n = n or (8192 if dev.type == "cuda" else 2048)
    key = (str(dev), dtype, n, torch.get_num_threads())
    if key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    a = torch.randn(n, n, device=dev).to(dt)
    b = torch.randn(n, n, device=dev).to(dt)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.matmul(a, b)  # warm-up (threads, cuBLAS handles)
    sync()
    best, deadline = float("inf"), time.perf_counter() + seconds
    reps = 0
    while reps < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
        reps += 1
        if reps >= 200:
            break
    _PEAK_CACHE[key] = 2.0 * n**3 / best / 1e9
    return _PEAK_CACHE[key]
