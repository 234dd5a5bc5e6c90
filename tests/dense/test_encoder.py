"""DenseEncoder against an independent re-implementation written the way the upstream code computes.

The reference below follows ResCLIP's ``clip/model.py`` structure (sequence-first tokens, per-(batch*head)
``bmm`` attention, trunk attention maps kept as N x N matrices, SFR matrix built pair by pair with Python
loops, PAMR with 3x3 dilated convolutions) on the weights of the same open_clip model.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipsam.config import METHODS, dense_config
from clipsam.dense.encoder import DenseEncoder

METHOD_NAMES = [m for m, row in METHODS.items() if row[0] not in ("rfclip", "corrclip")]  # own encoders, own tests


# --------------------------------------------------------------------------------------------------------
# upstream-style reference
def _custom_attn(attn_layer, x, base=None, omega=None, attn_rcs=None, attn_sfr=None, sfr_w=None, rcs_w=None):
    num_heads = attn_layer.num_heads
    num_tokens, bsz, embed_dim = x.size()
    head_dim = embed_dim // num_heads
    scale = head_dim**-0.5
    q, k, v = F.linear(x, attn_layer.in_proj_weight, attn_layer.in_proj_bias).chunk(3, dim=-1)
    q = q.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    k = k.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    v = v.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)

    def blend(w):
        if attn_sfr is None:
            return w
        s = (attn_sfr / torch.max(attn_sfr)).to(torch.float16)
        return sfr_w[0] * ((1 - sfr_w[1]) * w + sfr_w[1] * s)

    if base is None:  # trunk block
        w = torch.softmax(torch.bmm(q * scale, k.transpose(1, 2)), dim=-1)
    elif base == "naclip":
        w = blend(torch.bmm(k, k.transpose(1, 2)) * scale)
        w = torch.softmax(w + omega, dim=-1)
    elif base == "sclip":
        w = torch.softmax(blend(torch.bmm(q, q.transpose(1, 2)) * scale), -1) + torch.softmax(
            blend(torch.bmm(k, k.transpose(1, 2)) * scale), -1
        )
    elif base == "clearclip":
        w = torch.softmax(blend(torch.bmm(q, q.transpose(1, 2)) * scale), dim=-1)
    else:
        w = torch.softmax(blend(torch.bmm(q * scale, k.transpose(1, 2))), dim=-1)
    if base is not None and attn_rcs is not None:
        w = rcs_w[0] * ((1 - rcs_w[1]) * w + rcs_w[1] * attn_rcs)
    out = torch.bmm(w, v).transpose(0, 1).contiguous().view(-1, bsz, embed_dim)
    return attn_layer.out_proj(out), w


def _omega(h, w, std):
    window = torch.zeros(2 * h - 1, 2 * w - 1)
    for i in range(2 * h - 1):
        for j in range(2 * w - 1):
            window[i, j] = math.exp(-((i - h + 1) ** 2 + (j - w + 1) ** 2) / (2 * std**2))
    m = torch.einsum("ij,kl->ijkl", torch.eye(h), torch.eye(w)).permute(0, 3, 1, 2).contiguous()
    out = F.conv2d(m.view(-1, h, w).unsqueeze(1), window[None, None], padding="same").squeeze(1).view(h * w, h * w)
    full = torch.zeros(h * w + 1, h * w + 1)
    full[1:, 1:] = out
    return full[None]


def _pamr_conv(img, mask, iters, dilations):
    def kernels(kind):
        offs = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]
        if kind == "std":
            wgt = torch.zeros(9, 1, 3, 3)
            for n, (i, j) in enumerate([(i, j) for i in range(3) for j in range(3)]):
                wgt[n, 0, i, j] = 1
            return wgt
        wgt = torch.zeros(8, 1, 3, 3)
        for n, (i, j) in enumerate(offs):
            if kind == "aff":
                wgt[n, 0, 1, 1] = 1
                wgt[n, 0, i, j] = -1
            else:
                wgt[n, 0, i, j] = 1
        return wgt

    def local(x, wgt):
        b, c, h, w = x.shape
        x = x.reshape(b * c, 1, h, w)
        outs = [F.conv2d(F.pad(x, [d] * 4, mode="replicate"), wgt, dilation=d) for d in dilations]
        return torch.cat(outs, 1).view(b, c, -1, h, w)

    std = local(img, kernels("std")).std(2, keepdim=True)
    a = (-local(img, kernels("aff")).abs() / (1e-8 + 0.1 * std)).mean(1, keepdim=True)
    a = torch.softmax(a, 2)
    for _ in range(iters):
        mask = (local(mask, kernels("copy")) * a).sum(2)
    return mask


def _sfr_loops(labels, std):
    h, w = labels.shape
    n = h * w
    coords = [(i // w, i % w) for i in range(n)]
    steps = [[max(abs(a[0] - b[0]), abs(a[1] - b[1])) for b in coords] for a in coords]
    big_d = max(max(r) for r in steps)
    t = torch.linspace(0, 1, steps=big_d + 1)
    s = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            same = float(labels[coords[i]] == labels[coords[j]]) if i != j else 1.0
            valid = True
            for kk in range(steps[i][j] + 1):
                p = [
                    int(
                        torch.round(
                            torch.tensor(float(coords[i][a])) * (1 - t[kk]) + torch.tensor(float(coords[j][a])) * t[kk]
                        )
                    )
                    for a in range(2)
                ]
                if labels[p[0], p[1]] != labels[coords[i]]:
                    valid = False
            s[i, j] = same if valid else same * torch.exp(torch.tensor(-steps[i][j] / big_d)).item()
    size = min(n, int(6 * std + 1))
    size = size if size % 2 else size + 1
    x = torch.arange(size) - size // 2
    ker = torch.exp(-(x**2) / (2 * std**2))
    ker = ker / ker.sum()
    s = F.relu(F.conv1d(s.unsqueeze(1), ker.view(1, 1, -1), padding=size // 2).squeeze(1))
    s = s / (s.sum(1, keepdim=True) + 1e-8)
    full = torch.zeros(n + 1, n + 1)
    full[1:, 1:] = s
    return full[None]


def upstream_logits(visual, img, text, cfg):
    """(1,3,H,W) -> (1,Q,h,w) logits, computed as upstream does, for one crop."""
    _, _, H, W = img.shape
    p = visual.conv1.kernel_size[0]
    gh, gw = H // p, W // p
    x = visual.conv1(img).reshape(1, visual.conv1.out_channels, -1).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding + torch.zeros(1, 1, x.shape[-1]), x], dim=1)
    pos = visual.positional_embedding
    if x.shape[1] != pos.shape[0]:
        n = int(math.sqrt(pos.shape[0] - 1))
        pp = F.interpolate(
            pos[1:].reshape(1, n, n, -1).permute(0, 3, 1, 2),
            mode="bicubic",
            scale_factor=((gh + 0.1) / n, (gw + 0.1) / n),
            align_corners=False,
            recompute_scale_factor=False,
        )
        pos = torch.cat([pos[:1][None], pp.permute(0, 2, 3, 1).reshape(1, -1, pp.shape[1])], dim=1)[0]
    x = visual.ln_pre(x + pos).permute(1, 0, 2)
    maps = []
    for blk in visual.transformer.resblocks[:-1]:
        xi, ai = _custom_attn(blk.attn, blk.ln_1(x))
        x = x + xi
        x = x + blk.mlp(blk.ln_2(x))
        maps.append(ai)
    rcs = torch.stack(maps[5:9]).mean(0) if cfg.rcs else None
    omega = _omega(gh, gw, cfg.gaussian_std)
    blk = visual.transformer.resblocks[-1]

    def last(x, sfr):
        o, _ = _custom_attn(blk.attn, blk.ln_1(x), cfg.base, omega, rcs, sfr, cfg.sfr_weights, cfg.rcs_weights)
        if cfg.residual:
            x = x + o
            return x + blk.mlp(blk.ln_2(x))
        return o

    def logits_of(x):
        f = (visual.ln_post(x.permute(1, 0, 2)) @ visual.proj)[:, 1:]
        f = f / f.norm(dim=-1, keepdim=True)
        return (f @ text.T).permute(0, 2, 1).reshape(1, -1, gh, gw)

    sfr = None
    if cfg.sfr:
        first = F.interpolate(logits_of(last(x, None)), size=(H, W), mode="bilinear", align_corners=False)
        probs = torch.softmax(_pamr_conv(img, first, 10, (8, 16))[0] * cfg.logit_scale, dim=0)
        pred = probs.argmax(0)
        pred[probs.max(0)[0] < cfg.temp_thd] = 0
        patches = pred.unfold(0, p, p).unfold(1, p, p).reshape(gh, gw, -1)
        labels = torch.mode(patches, dim=-1)[0]
        sfr = _sfr_loops(labels, cfg.gaussian_std)
    return logits_of(last(x, sfr))


# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("size", [(64, 80), (50, 100)])
def test_encoder_matches_upstream_arithmetic(tiny_clip, method, size):
    visual = tiny_clip.model.visual
    cfg = dense_config(method, "voc21", temp_thd=0.0)  # temp 0: keep labels varied for random weights
    enc = DenseEncoder(visual, cfg)
    img = torch.randn(1, 3, *size)
    text = F.normalize(torch.randn(5, 64), dim=-1)
    with torch.inference_mode():
        ours = enc(img, text)
        ref = upstream_logits(visual, img, text, cfg)
    assert ours.shape == ref.shape == (1, 5, size[0] // 16, size[1] // 16)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_encoder_native_grid_uses_positional_embedding_unchanged(tiny_clip):
    cfg = dense_config("naclip", "voc21")
    enc = DenseEncoder(tiny_clip.model.visual, cfg)
    img = torch.randn(2, 3, 224, 224)
    text = F.normalize(torch.randn(3, 64), dim=-1)
    with torch.inference_mode():
        ours = enc(img, text)
        ref = torch.cat([upstream_logits(tiny_clip.model.visual, img[i : i + 1], text, cfg) for i in range(2)])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert (14, 14, img.device, img.dtype) not in enc._pos_cache


def test_positional_embedding_is_cached_per_grid(tiny_clip):
    enc = DenseEncoder(tiny_clip.model.visual, dense_config("sclip", "voc21"))
    x = torch.randn(1, 3, 48, 64)
    with torch.inference_mode():
        enc.embed(x)
        first = enc._pos_cache[(3, 4, x.device, x.dtype)]
        enc.embed(x)
    assert enc._pos_cache[(3, 4, x.device, x.dtype)] is first


def test_rcs_layers_beyond_model_depth_is_an_error(tiny_clip):
    with pytest.raises(ValueError, match="RCS layers"):
        DenseEncoder(tiny_clip.model.visual, dense_config("resclip", "voc21", rcs_layers=(5, 11)))


def test_resclip_passes_share_qkv_and_rcs_maps_bit_for_bit(tiny_clip, chelsea_small):
    """The second pass reuses the first pass's q, k, v and RCS maps: equal to recomputing them, bit for bit."""
    from clipsam.config import dense_config
    from clipsam.dense.encoder import DenseEncoder
    from clipsam.dense.ops import TorchOps
    from clipsam.ops.base import sfr_feedback
    from clipsam.preprocess import preprocess

    cfg = dense_config("resclip", "voc21", temp_thd=0.0)
    enc = DenseEncoder(tiny_clip.model.visual, cfg)
    crops = torch.from_numpy(preprocess(chelsea_small, 64, 2048, min_side=16))[None]
    text = torch.nn.functional.normalize(torch.randn(7, tiny_clip.model.visual.output_dim), dim=-1)
    ops = TorchOps("cpu")
    got = enc(crops, text, ops)
    with torch.inference_mode():  # the two passes written out without sharing anything
        x, grid = enc.embed(crops)
        x, rcs = enc.trunk(x)
        first = enc.patch_logits(enc.last_block(x, grid, rcs, None), grid, text)
        term = ops.sfr_term(sfr_feedback(ops, first, crops, enc.patch, cfg), cfg.attention.sfr_weights[1])
        ref = enc.patch_logits(enc.last_block(x, grid, rcs, term), grid, text, calibrate=True)
    assert rcs[0] is not None and term.abs().sum() > 0
    assert torch.equal(got, ref)
