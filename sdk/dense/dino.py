"""DINO ViT-B/8 for CorrCLIP, built offline from timm's architecture (``vit_base_patch8_224.dino``).

``load_dino(weights)`` takes a local checkpoint (DINO's own ``dino_vitbase8_pretrain.pth`` state dict or timm's; the
key names are the same), the name ``"dino_vitb8"`` (the official weights, downloaded from Meta's file server when
online; offline it fails at once), or None for random weights (tests; warns). ``dino_qk_features`` is what CorrCLIP
reads from it (``docs/algorithms.md`` section 16.3): the normalised ``q + k`` of the last block, with DINO's own
positional-embedding resize and its explicit attention softmax (timm's fused kernel is switched off: the scope rule
compares similarities with their mean, so kernels must agree bit for bit).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, first_line, missing_dependency

DINO_NAME = "dino_vitb8"
DINO_URL = "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth"
CLIP_MEAN01 = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD01 = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _build(seed: int = 0):
    try:
        import timm
    except ImportError as e:  # pragma: no cover
        raise missing_dependency("timm", "torch", "CorrCLIP's DINO ViT-B/8") from e
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model("vit_base_patch8_224.dino", pretrained=False, num_classes=0)
    for name, module in model.named_modules():
        if name.endswith(".attn") and hasattr(module, "fused_attn"):
            module.fused_attn = False  # softmax((q * scale) k^T) v, as DINO computes it
    return model.eval()


def load_dino(weights: str | os.PathLike | None = DINO_NAME, device="cpu"):
    """DINO ViT-B/8 (timm modules) with its weights, in eval mode.

    Arguments:
        weights: a checkpoint file (a state dict, or {"model"/"teacher"/"state_dict": ...} with ``module.`` /
            ``backbone.`` prefixes), ``"dino_vitb8"`` for the official weights (online), or None for random weights.
        device: where the model runs.
    """
    model = _build()
    if weights is None:
        warnings.warn(
            "clipsam: DINO ViT-B/8 with RANDOM weights (dino_weights=None): CorrCLIP's results are "
            "meaningless; use this only for tests and offline smoke runs.",
            UserWarning,
            stacklevel=3,
        )
        return model.to(device)
    if str(weights) == DINO_NAME:
        from ..models import reachable

        if not reachable("dl.fbaipublicfiles.com", 443):
            raise CheckpointError(
                f"cannot download the DINO ViT-B/8 weights ({DINO_URL}): the host cannot be reached "
                "(no network, or a proxy is needed). Download the file elsewhere and pass "
                "dino_weights=PATH (CLI: --dino-weights PATH), or dino_weights=None for random "
                "weights in a smoke run."
            )
        try:
            sd = torch.hub.load_state_dict_from_url(DINO_URL, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(
                f"could not download the DINO ViT-B/8 weights from {DINO_URL} ({first_line(e)}); pass dino_weights=PATH"
            ) from e
        source = DINO_URL
    else:
        from ..models import checkpoint_file, torch_load

        path = checkpoint_file(Path(os.fspath(weights)), "DINO checkpoint")
        sd, source = torch_load(path, "DINO checkpoint"), str(path)
    for key in ("teacher", "model", "state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    sd = {
        k.removeprefix("module.").removeprefix("backbone."): v
        for k, v in sd.items()
        if not k.startswith(("head.", "module.head.", "backbone.head."))
    }
    expected = model.state_dict()
    missing, unexpected = sorted(expected.keys() - sd.keys()), sorted(sd.keys() - expected.keys())
    wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"DINO checkpoint {source} does not match ViT-B/8 (timm vit_base_patch8_224.dino): "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong)} shape mismatches (e.g. {wrong[:3]}). Pass DINO's dino_vitbase8_pretrain.pth or a timm "
            "vit_base_patch8_224.dino state dict."
        )
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.to(device)


def dino_input(crops: torch.Tensor) -> torch.Tensor:
    """CLIP-normalised crops (B, 3, H, W) -> ImageNet-normalised, as upstream: ``x * std + mean`` (CLIP's, in 0..1)
    then ``(x - mean') / std'`` (ImageNet's), two steps in float32."""
    shape = (1, 3, 1, 1)
    x = crops * torch.tensor(CLIP_STD01, dtype=crops.dtype, device=crops.device).view(shape)
    x = x + torch.tensor(CLIP_MEAN01, dtype=crops.dtype, device=crops.device).view(shape)
    return (x - torch.tensor(IMAGENET_MEAN, dtype=crops.dtype, device=crops.device).view(shape)) / torch.tensor(
        IMAGENET_STD, dtype=crops.dtype, device=crops.device
    ).view(shape)


def _pos_embed(model, fh: int, fw: int, dtype) -> torch.Tensor:
    """(1, 1 + fh*fw, D): DINO's ``interpolate_pos_encoding``: native when the grid is the native square, else bicubic
    with scale factors ((fh + 0.1) / n, (fw + 0.1) / n) (align_corners False, the factor used as given)."""
    pos = model.pos_embed
    n = int(round((pos.shape[1] - 1) ** 0.5))
    if fh * fw == n * n and fh == fw:
        return pos.to(dtype)
    grid = pos[:, 1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((fh + 0.1) / n, (fw + 0.1) / n), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, fh * fw, -1)
    return torch.cat([pos[:, :1], grid], dim=1).to(dtype)


def dino_block_fp16(block, x: torch.Tensor) -> torch.Tensor:
    """A timm ViT block (B, 1 + L, D) -> (B, 1 + L, D) in the order of DINO's own code: attention logits
    ``(q kᵀ) * scale``. timm scales q first, the same in float32 but not in fp16, where small ``q * scale`` values
    lose bits as subnormals. For the fp16 DINO of ``precision="fp16-upstream"``."""
    a = block.attn
    b, n, c = x.shape
    qkv = a.qkv(block.norm1(x)).reshape(b, n, 3, a.num_heads, c // a.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q @ k.transpose(-2, -1)) * a.scale).softmax(dim=-1)
    x = x + a.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
    return x + block.mlp(block.norm2(x))


def dino_qk_features(
    model, crops: torch.Tensor, pos: torch.Tensor | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """CorrCLIP's DINO features of CLIP-normalised crops.

    Arguments:
        model: ``load_dino``'s model, or its fp16 copy (``clipsam.dense.upstream_fp16.half_dino``: fp16 input, blocks
            by ``dino_block_fp16``).
        crops: (B, 3, H, W) CLIP-normalised crops.
        pos: (1 + fh*fw, D) positional embedding to add instead of DINO's own resize (the exported graph's host input,
            ``clipsam.ops.resize.interpolate_pos_embed(..., native="grid")``), or None.

    Returns:
        (B, fh * fw, D) L2-normalised ``q + k`` (all heads together) of the last block's qkv projection of its
        normalised input, CLS dropped; and the grid (fh, fw) = (H // 8, W // 8).
    """
    proj = model.patch_embed.proj
    x = proj(dino_input(crops).to(proj.weight.dtype))  # (B, D, fh, fw); an fp16 DINO takes fp16 input
    fh, fw = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([model.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
    x = x + (_pos_embed(model, fh, fw, x.dtype) if pos is None else pos[None].to(x.dtype))
    fp16 = proj.weight.dtype == torch.float16  # upstream's .half() DINO: its own operation order
    for block in model.blocks[:-1]:
        x = dino_block_fp16(block, x) if fp16 else block(x)
    last = model.blocks[-1]
    qkv = last.attn.qkv(last.norm1(x))
    d = qkv.shape[-1] // 3
    return F.normalize((qkv[..., :d] + qkv[..., d : 2 * d])[:, 1:], dim=-1), (fh, fw)
