"""CorrCLIP v1 (``method="corrclip"``) against an independent implementation written from ``docs/algorithms.md``
section 16.

The reference computes the way the upstream code is organised, sharing no code with ``clipsam.dense.corrclip``:
DINO's own input de/renormalisation (in-place ``mul_``/``add_``), DINO's positional-embedding resize with its
``(w, h)`` naming, the last block's qkv read through a forward hook; region merging with scipy's connected components
(relabelled in order of first appearance, as DBSCAN numbers its clusters); the attention scope built region by region;
the CLIP trunk run on ONE joint sequence of [mask class tokens ; CLS ; patches] (sequence-first) with an additive
-inf mask; the semantic branch as a one-hot product; windows padded to multiples of 56 with the padding as region
10000; the mask vote with ``torch.mode``.

Random weights make masks and merging degenerate, so the inputs are planted: an image with two regions of the same
colour and stripes (their mean DINO features are close, so they merge: the merge threshold is set between their
distance and the next one, measured on the first window), a region partly covered by another (boolean masks: the
painting order decides), unsegmented background, a window narrower than the crop (padding, pad region), windows
whose grids need the positional-embedding resize, a map with no unsegmented pixel (the smallest id becomes
unsegmented), and no masks at all. DINO is a narrow timm ViT with patch 8 here (ViT-B/8 itself: ``test_dino.py``).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph
import torch
import torch.nn.functional as F

from clipsam.config import dense_config
from clipsam.dense.corrclip import CorrClipEncoder, merge_regions
from clipsam.errors import ClipSamError, ConfigError
from clipsam.masks import paint_masks
from clipsam.preprocess import preprocess
from clipsam.segmenter import Segmenter

from .test_rfclip import _heads, _merge, _tokens

CLIP01 = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLASSES = [["sky", "wall"], "cat", "dog", "tree"]  # synonyms in class 0 only, as CorrCLIP's class files


@pytest.fixture(autouse=True, scope="module")
def _flush_denormals():
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def small_dino():
    """A narrow DINO-style timm ViT (patch 8, 3 blocks, width 64), explicit attention softmax."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=224, patch_size=8, embed_dim=64, depth=3, num_heads=2, num_classes=0)
    for block in model.blocks:
        block.attn.fused_attn = False
    return model.eval()


# --------------------------------------------------------------------------------------------------------
# reference
def ref_dino(dino, crop):
    """(1, 3, h, w) CLIP-normalised -> (Ld, D) unit q + k of the last block (hook), as upstream."""
    x = crop.clone()
    for c in range(3):
        x[:, c].mul_(CLIP01[1][c]).add_(CLIP01[0][c])
    x = torch.stack([(x[:, c] - IMAGENET[0][c]) / IMAGENET[1][c] for c in range(3)], dim=1)
    _, _, w, h = x.shape  # DINO's names: w is the height
    tok = dino.patch_embed.proj(x.to(dino.patch_embed.proj.weight.dtype)).flatten(2).transpose(1, 2)  # fp16: .half()
    tok = torch.cat([dino.cls_token.expand(1, -1, -1), tok], dim=1)
    pos, n = dino.pos_embed, dino.pos_embed.shape[1] - 1
    if tok.shape[1] - 1 != n or w != h:
        w0, h0 = w // 8 + 0.1, h // 8 + 0.1
        grid = pos[:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)), mode="bicubic")
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])], dim=1)
    tok = tok + pos
    seen = {}
    handle = dino.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: seen.setdefault("qkv", o))
    for blk in dino.blocks:
        tok = blk(tok)
    handle.remove()
    d = tok.shape[-1]
    qkv = seen["qkv"][0]
    return F.normalize(qkv[1:, :d] + qkv[1:, d : 2 * d], dim=-1)


def ref_merge(r, feats, eps, log):
    vals = torch.unique(r)
    if len(vals) <= 2:
        return r
    means = torch.stack([feats[(r == v).flatten()].mean(0) for v in vals])
    g = F.normalize(means, dim=1)[1:]
    sim = g @ g.T
    dist = sim.max() - sim
    close = (dist.double() if dist.dtype == torch.float16 else dist) <= eps  # scikit-learn compares fp16 in float64
    _, lab = scipy.sparse.csgraph.connected_components(scipy.sparse.csr_matrix(close.numpy()), directed=False)
    first: dict = {}
    labels = [first.setdefault(int(v), len(first)) for v in lab]
    log.append((dist, labels))
    out = r.clone()
    for a, lab_a in enumerate(labels, start=1):
        out[r == vals[a]] = lab_a + 10000
    return out


def _masked_block(blk, x, mask):
    q, k, v = _heads(blk.attn, blk.ln_1(x))
    s = q.shape[-1] ** -0.5
    x = x + blk.attn.out_proj(_merge(torch.softmax((q * s) @ k.transpose(1, 2) + mask.to(q.dtype), dim=-1) @ v))
    return x + blk.mlp(blk.ln_2(x))


def ref_window(visual, dino, text, crop, mc, corr, log):
    """(1, Q, h, w) logits of one padded window (h, w multiples of 56) with its region map mc (h, w)."""
    h, w = crop.shape[-2:]
    fh, fw, th, tw = h // 8, w // 8, h // 16, w // 16
    feats = ref_dino(dino, crop)
    sim = torch.einsum("id,jd->ij", feats, feats)
    r = F.interpolate(mc[None, None].float(), size=(fh, fw), mode="nearest").int()[0, 0]
    r = ref_merge(r, feats, corr.corr_merge_eps, log)
    ids = torch.unique(r)
    ms = [(r.flatten() == v) for v in ids]
    allowed = torch.zeros(fh * fw, fh * fw, dtype=torch.bool)
    for m in ms[1:]:
        allowed |= m[:, None] & m[None, :]
    allowed |= (ms[0][:, None] | ms[0][None, :]) & (sim > sim.mean())
    a = torch.softmax(4.0 * sim.masked_fill(~allowed, float("-inf")), dim=-1)
    # CLIP: one joint sequence of NR mask class tokens, CLS and patches
    x0, _ = _tokens(visual, crop)
    rt = F.interpolate(r[None, None].float(), size=(th, tw), mode="nearest")[0, 0]
    tids = torch.unique(rt)
    nr = len(tids)
    rk = torch.stack([rt == v for v in tids])  # (NR, th, tw)
    seq = torch.cat([x0[:1].repeat(nr, 1, 1), x0], dim=0)
    n = seq.shape[0]
    blocked = torch.ones(n, n, dtype=torch.bool)
    blocked[nr:, nr:] = False
    for k in range(nr):
        blocked[k, nr] = False
        blocked[k, nr + 1 :] = ~rk[k].flatten()
    mask = torch.zeros(n, n).masked_fill(blocked, float("-inf"))
    blocks = list(visual.transformer.resblocks)
    keep = []
    for i, blk in enumerate(blocks[:-1]):
        seq = _masked_block(blk, seq, mask)
        if i in (5, 6, 7, 8, 9):
            keep.append(seq[nr:])
    last = blocks[-1]
    mct = _masked_block(last, seq, mask)[:nr, 0]
    d = seq.shape[-1]
    outs = []
    for z in (seq[nr:], torch.stack(keep).mean(0)):
        v = F.linear(last.ln_1(z), last.attn.in_proj_weight[2 * d :], last.attn.in_proj_bias[2 * d :])[1:, 0]
        v = F.interpolate(v.T.reshape(1, d, th, tw), size=(fh, fw), mode="bilinear", align_corners=False)
        outs.append(last.attn.out_proj(a @ v[0].reshape(d, -1).T))
    onehot = F.interpolate(rk[None].to(mct.dtype), size=(fh, fw), mode="nearest")[0].reshape(nr, -1)
    sem = onehot.T @ mct
    feat = visual.ln_post(outs[0]) + 1.0 * visual.ln_post(outs[1]) + 0.5 * visual.ln_post(sem)
    f = F.normalize(feat @ visual.proj, dim=-1)
    log.append(("features", f))
    lg = (f @ text.T).T.reshape(1, -1, fh, fw)
    return F.interpolate(lg, size=(h, w), mode="bilinear", align_corners=False)


def ref_image(visual, dino, text, inp, m0, cfg, log):
    """(Q, H0, W0) logits and the map M0, as upstream's predict (sliding windows, padding to 56)."""
    sc, corr = cfg.schedule, cfg.corrclip
    h, w = inp.shape[-2:]
    m = F.interpolate(torch.from_numpy(m0)[None, None].float(), size=(h, w), mode="nearest").int()[0, 0]
    preds = torch.zeros(1, text.shape[0], h, w)
    count = torch.zeros(1, 1, h, w)
    c, t = sc.slide_crop, sc.slide_stride
    for i in range(max(h - c + t - 1, 0) // t + 1):
        for j in range(max(w - c + t - 1, 0) // t + 1):
            y1, x1 = i * t, j * t
            y2, x2 = min(y1 + c, h), min(x1 + c, w)
            y1, x1 = max(y2 - c, 0), max(x2 - c, 0)
            crop, mc = inp[:, :, y1:y2, x1:x2], m[y1:y2, x1:x2]
            ch, cw = crop.shape[-2:]
            lr = 56 - cw % 56 if cw % 56 else 0
            tb = 56 - ch % 56 if ch % 56 else 0
            pad = (lr // 2, lr - lr // 2, tb // 2, tb - tb // 2)
            if lr or tb:
                crop = F.pad(crop, pad)
                mc = F.pad(mc, pad, value=10000)
            lg = ref_window(visual, dino, text, crop, mc, corr, log)
            lg = lg[:, :, pad[2] : pad[2] + ch, pad[0] : pad[0] + cw]
            preds[:, :, y1:y2, x1:x2] += lg
            count[:, :, y1:y2, x1:x2] += 1
    return F.interpolate(preds / count, size=m0.shape, mode="bilinear", align_corners=False)[0]


def ref_labels(logits, m0, q2c, num_classes, cfg):
    p = torch.softmax(logits * cfg.post.logit_scale, dim=0)
    q2c = torch.tensor(q2c)
    probs = torch.stack([p[q2c == c].max(0)[0] for c in range(num_classes)])
    pred = probs.argmax(0)
    pred[probs.max(0)[0] < cfg.post.prob_thd] = 0
    ids = torch.from_numpy(m0)
    for v in torch.unique(ids)[1:]:
        pred[ids == v] = torch.mode(pred[ids == v]).values
    return pred.numpy()


# --------------------------------------------------------------------------------------------------------
# planted inputs
def _image(h=100, w=150, seed=0):
    """Noise background; two red striped rectangles (same colour and texture), a blue block, a green block over it."""
    rng = np.random.RandomState(seed)
    img = rng.rand(h, w, 3) * 90
    stripes = (np.arange(w) // 3 % 2)[None, :] * 120
    for y0, x0 in ((8, 8), (56, 86)):
        img[y0 : y0 + 36, x0 : x0 + 50] = 0
        img[y0 : y0 + 36, x0 : x0 + 50, 0] = 130 + stripes[:, x0 : x0 + 50]
    img[10:50, 78:140, 2] = 230
    img[30:60, 110:148, 1] = 220
    return img.astype(np.uint8)


def _bool_masks(h=100, w=150):
    """Five boolean masks: the two red rectangles, the blue block, the green block (overlapping the blue one), and a
    tiny one inside the first rectangle that the larger rectangle paints over."""
    out = np.zeros((5, h, w), bool)
    out[0, 8:44, 8:58] = True
    out[1, 56:92, 86:136] = True
    out[2, 10:50, 78:140] = True
    out[3, 30:60, 110:148] = True
    out[4, 20:24, 20:24] = True
    return out


_TEXT: list = []


def _planted_text():
    """5 queries (bg with 2 synonyms, cat, dog, tree): the reference's features of five cells of the first window,
    so that labels vary over the image (random text vectors all lose to one query)."""
    return _TEXT[0]


@pytest.fixture(autouse=True, scope="module")
def _text(tiny_clip, small_dino):
    seg = _segmenter(tiny_clip, small_dino)
    inp = torch.from_numpy(preprocess(_image(), seg.config.short_side, 2048, min_side=16))[None]
    m0 = paint_masks(_bool_masks())
    m = F.interpolate(torch.from_numpy(m0)[None, None].float(), size=inp.shape[-2:], mode="nearest").int()[0, 0]
    log: list = []
    with torch.no_grad():
        ref_window(
            tiny_clip.model.visual,
            small_dino,
            torch.zeros(1, 64),
            F.pad(inp[:, :, :, :112], (0, 0, 6, 6)),
            F.pad(m[:, :112], (0, 0, 6, 6), value=10000),
            seg.config.corrclip,
            log,
        )
    f = log[-1][1]
    _TEXT[:] = [f[[30, 60, 100, 150, 190]].clone()]
    yield
    _TEXT.clear()


def _segmenter(tiny_clip, dino, **overrides):
    cfg = dense_config(
        "corrclip",
        "voc21",
        corr_mask_source="given",
        short_side=100,
        slide_crop=112,
        slide_stride=56,
        prob_thd=0.0,
        templates=("a photo of a {}.",),
    ).replace(**overrides)
    return Segmenter(copy.copy(tiny_clip), cfg, dino=dino)


def _run_both(tiny_clip, dino, m0, masks, **overrides):
    seg = _segmenter(tiny_clip, dino, **overrides)
    text = _planted_text()
    seg.text_embeddings = lambda v: text
    img = _image()
    ours = seg.logits(img, classes=CLASSES, masks=masks)
    inp = torch.from_numpy(preprocess(img, seg.config.short_side, 2048, min_side=16))[None]
    log: list = []
    with torch.no_grad():
        ref = ref_image(tiny_clip.model.visual, dino, text, inp, m0, seg.config, log)
    return seg, text, img, ours, ref, log


def _merge_eps(tiny_clip, dino, m0):
    """A merge threshold between the planted pair's distance and the next one (first window), and those two."""
    seg = _segmenter(tiny_clip, dino)
    inp = torch.from_numpy(preprocess(_image(), seg.config.short_side, 2048, min_side=16))[None]
    m = F.interpolate(torch.from_numpy(m0)[None, None].float(), size=inp.shape[-2:], mode="nearest").int()[0, 0]
    crop = F.pad(inp[:, :, :, :112], (0, 0, 6, 6))
    mc = F.pad(m[:, :112], (0, 0, 6, 6), value=10000)
    with torch.no_grad():
        feats = ref_dino(dino, crop)
    r = F.interpolate(mc[None, None].float(), size=(14, 14), mode="nearest").int()[0, 0]
    log: list = []
    ref_merge(r, feats, -1.0, log)
    dist = log[0][0]
    off = dist[~torch.eye(len(dist), dtype=torch.bool)]
    lo, hi = torch.sort(torch.unique(off))[0][:2].tolist()
    return (lo + hi) / 2, lo, hi


# --------------------------------------------------------------------------------------------------------
def test_corrclip_matches_reference_with_planted_masks(tiny_clip, small_dino):
    masks = _bool_masks()
    m0 = paint_masks(masks)
    eps, lo, hi = _merge_eps(tiny_clip, small_dino, m0)
    assert hi - lo > 1e-4  # a clear gap: the pair merges, the others do not
    seg, text, img, ours, ref, log = _run_both(tiny_clip, small_dino, m0, list(masks), corr_merge_eps=eps)
    merges = [labels for kind, labels in log if kind != "features"]
    merged = [labels for labels in merges if len(set(labels)) < len(labels)]
    assert merged and any(len(set(labels)) > 1 for labels in merged)  # some regions merged, not all
    assert any(len(labels) >= 4 for labels in merges)
    torch.testing.assert_close(torch.from_numpy(ours), ref, atol=2e-5, rtol=0)
    res = seg.segment(img, classes=CLASSES, masks=list(masks))
    want = ref_labels(ref, m0, seg.vocabulary(CLASSES).query_to_class, 4, seg.config)
    assert (res.labels == want).mean() > 0.999
    assert len(np.unique(res.labels)) > 1
    # the vote made every mask uniform, and the unsegmented pixels kept their own labels
    for v in np.unique(m0)[1:]:
        assert len(np.unique(res.labels[m0 == v])) == 1
    # an instance map gives the same as the boolean masks it paints
    again = seg.segment(img, classes=CLASSES, masks=m0 * 7)
    np.testing.assert_array_equal(again.labels, res.labels)


def test_corrclip_full_cover_and_no_masks_match_reference(tiny_clip, small_dino):
    m0 = paint_masks(_bool_masks())
    full = m0 + 3  # no 0 anywhere: the smallest id (3) is the unsegmented region, in windows and in the vote
    _, _, _, ours, ref, _ = _run_both(tiny_clip, small_dino, full, full, corr_merge_eps=0.0)
    torch.testing.assert_close(torch.from_numpy(ours), ref, atol=2e-5, rtol=0)
    zeros = np.zeros_like(m0)
    seg, _, img, ours, ref, log = _run_both(tiny_clip, small_dino, zeros, None, corr_mask_source="none")
    assert all(kind == "features" for kind, _ in log)  # one region: nothing to merge
    torch.testing.assert_close(torch.from_numpy(ours), ref, atol=2e-5, rtol=0)
    res = seg.segment(img, classes=CLASSES)
    assert (res.labels == ref_labels(ref, zeros, seg.vocabulary(CLASSES).query_to_class, 4, seg.config)).mean() > 0.999


def test_batched_multiscale_flip_equals_each_image_alone(tiny_clip, small_dino):
    seg = _segmenter(tiny_clip, small_dino, scales=(1.0, 0.75), flip=True, corr_merge_eps=0.05)
    text = _planted_text()
    seg.text_embeddings = lambda v: text
    a, b = _image(), _image(seed=3)[:90, :140]
    ma, mb = _bool_masks(), _bool_masks()[:, :90, :140]
    both = seg.segment_batch([a, b], classes=CLASSES, masks=[ma, mb])
    for img, m, res in zip((a, b), (ma, mb), both):
        alone = seg.segment(img, classes=CLASSES, masks=m)
        np.testing.assert_array_equal(res.labels, alone.labels)
        np.testing.assert_allclose(res.scores, alone.scores, atol=1e-6)


def test_merge_regions_options():
    """``one_minus`` against 1 - G, ``zero``: only id 0 is unsegmented (a map without 0 merges all its regions)."""
    feats = F.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.1, 0.995]]), dim=-1)
    ids = torch.tensor([5, 6, 7, 8])
    smallest = merge_regions(ids, feats, 0.05, "one_minus", "smallest")
    assert smallest[0] == 5 and smallest[2] == smallest[3] != smallest[1]  # 5 stays unsegmented, 7 and 8 merge
    zero = merge_regions(ids, feats, 0.05, "one_minus", "zero")
    assert zero[0] == zero[1] != zero[2] and zero[2] == zero[3]
    two = torch.tensor([0, 0, 3, 3])  # two ids or fewer: nothing merges
    assert torch.equal(merge_regions(two, feats, 1.0, "max_minus", "smallest"), two)


def test_corrclip_mask_errors_before_model_work(tiny_clip, small_dino):
    seg = _segmenter(tiny_clip, small_dino)
    img = _image()
    calls = []
    seg.backend.patch_logits = lambda *a, **k: calls.append(1)
    bad = [
        np.zeros((50, 50), np.int64),  # wrong size
        np.zeros((100, 150), np.float32),  # float map
        np.zeros((100, 150), bool),  # one boolean mask without a list
        [],  # empty list
        np.zeros((0, 100, 150), bool),  # no masks
        [np.zeros((100, 150), np.uint8)],  # list of non-boolean masks
        [np.zeros((100, 151), bool)],  # list, wrong size
        -np.ones((100, 150), np.int32),  # negative ids
        "masks.png",  # not an array
    ]
    for m in bad:
        with pytest.raises(ClipSamError, match="masks"):
            seg.segment(img, classes=CLASSES, masks=m)
    with pytest.raises(ClipSamError, match="corr_mask_source='given'"):
        seg.segment(img, classes=CLASSES)
    with pytest.raises(ClipSamError, match="corr_mask_source='given'"):
        list(seg.segment_stream([img], classes=CLASSES))  # no silent all-unsegmented maps
    with pytest.raises(ClipSamError, match="one entry per image"):
        seg.segment_batch([img, img], classes=CLASSES, masks=[None])
    assert calls == []
    m = _bool_masks()
    before = m.copy()
    seg2 = _segmenter(tiny_clip, small_dino)
    seg2.segment(img, classes=CLASSES, masks=m)
    np.testing.assert_array_equal(m, before)  # the input is not modified


def test_corrclip_config_errors(tiny_clip, small_dino, make_segmenter):
    with pytest.raises(ConfigError, match="own last block"):
        dense_config("corrclip", "voc21", rcs=True)
    with pytest.raises(ConfigError, match="slide_crop"):
        dense_config("corrclip", "voc21", slide_crop=0)
    with pytest.raises(ConfigError, match="DINO"):
        Segmenter(copy.copy(tiny_clip), dense_config("corrclip", "voc21", corr_mask_source="none"))
    with pytest.raises(ConfigError, match="SAM2"):
        Segmenter(copy.copy(tiny_clip), dense_config("corrclip", "voc21"), dino=small_dino)
    with pytest.raises(ConfigError, match="sam2="):
        Segmenter.from_pretrained("ViT-B-16", None, method="corrclip")
    with pytest.raises(ConfigError, match="corr_spatial_blocks"):
        CorrClipEncoder(
            tiny_clip.model.visual, small_dino, dense_config("corrclip", "voc21", corr_spatial_blocks=(11,))
        )
    seg = make_segmenter("naclip", "voc21")
    with pytest.raises(ClipSamError, match="method='corrclip'"):
        seg.segment(_image(), classes=CLASSES, masks=np.zeros((100, 150), np.int32))


def test_encoder_spatial_blocks_follow_the_depth(tiny_clip, small_dino):
    enc = CorrClipEncoder(tiny_clip.model.visual, small_dino, dense_config("corrclip", "voc21"))
    assert enc.spatial == (5, 6, 7, 8, 9)


def test_automatic_masks_and_refinement_share_one_sam2(tiny_clip, small_dino):
    """The default mask source on a random hiera-t (filters off, 2 x 2 points): one SAM2 model, each image encoded
    once for both the automatic masks and the refinement; the vote follows the automatic masks."""
    import warnings

    from clipsam.refine import RefineConfig
    from clipsam.refine.sam2_backend import Sam2Refiner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sam2 = Sam2Refiner.from_pretrained("sam2.1_hiera_t", random_weights=True)
    cfg = dense_config(
        "corrclip",
        "voc21",
        short_side=100,
        slide_crop=112,
        slide_stride=56,
        prob_thd=0.0,
        templates=("a photo of a {}.",),
        corr_amg_points_per_side=2,
        corr_amg_pred_iou_thresh=0.0,
        corr_amg_stability_thresh=0.0,
    )
    seg = Segmenter(
        copy.copy(tiny_clip),
        cfg,
        dino=small_dino,
        refiner=sam2,
        refine_config=RefineConfig(min_confidence=0.0, max_prompts_per_image=2),
    )
    assert seg.mask_sam2 is sam2 and seg.automask is not None
    seg.text_embeddings = lambda v: _planted_text()
    encoded = []
    embed = sam2.embed_images
    sam2.embed_images = lambda images, batch_size=None: encoded.append(len(images)) or embed(images, batch_size)
    img = _image()
    maps = seg.automask.generate([img])
    encoded.clear()
    res = seg.segment(img, classes=CLASSES)
    assert encoded == [1]  # one encoder pass: the automatic masks' embedding is reused by the refinement
    m0 = maps[0][0]
    assert m0.max() >= 1  # at least one automatic mask
    for v in np.unique(m0)[1:]:
        assert len(np.unique(res.dense_labels[m0 == v])) == 1  # voted over each automatic mask
    assert res.info["refine"]["sam2"] == "sam2.1_hiera_t"


def test_warmup_with_given_masks(tiny_clip, small_dino):
    seg = _segmenter(tiny_clip, small_dino)  # corr_mask_source="given": every call needs masks
    done = seg.warmup(classes=CLASSES, sizes=[(60, 80)])
    assert done["sizes"] == [[60, 80]]


def test_from_pretrained_wires_dino_and_one_sam2():
    """``from_pretrained``: DINO ViT-B/8 (random), one SAM2 for the automatic masks, ``refine=False`` (no refinement),
    end to end on a small image."""
    import warnings

    from ..conftest import TINY_VIT

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = Segmenter.from_pretrained(
            TINY_VIT,
            None,
            method="corrclip",
            preset=None,
            dino_weights=None,
            sam2="sam2.1_hiera_t",
            sam2_random_weights=True,
            refine=False,
            corr_amg_points_per_side=2,
            short_side=112,
            slide_crop=112,
            slide_stride=112,
            templates=("a photo of a {}.",),
        )
    assert seg.refiner is None and seg.mask_sam2 is not None and seg.automask.refiner is seg.mask_sam2
    assert len(seg.dino.blocks) == 12 and seg.dino.pos_embed.shape[1] == 785  # ViT-B/8
    res = seg.segment(_image(60, 80), classes=CLASSES)
    assert res.labels.shape == (60, 80) and "refine" not in res.info
    assert res.info["corrclip"]["masks"] == "sam2" and res.info["corrclip"]["regions"] >= 0
    given = seg.segment(_image(60, 80), classes=CLASSES, masks=[np.ones((60, 80), bool)])
    assert given.info["corrclip"] == {"masks": "given", "regions": 1}


def test_segment_stream_takes_masks_in_step_with_the_images(tiny_clip, small_dino):
    """``segment_stream(masks=...)``: an iterable read in step with the images, across chunks; equal to
    ``segment_batch`` with the same masks; a length mismatch either way is an error."""
    seg = _segmenter(tiny_clip, small_dino, corr_merge_eps=0.05)
    seg.text_embeddings = lambda v: _planted_text()
    imgs = [_image(), _image(seed=3)[:90, :140], _image(seed=5)]
    masks = [_bool_masks(), paint_masks(_bool_masks()[:, :90, :140]), _bool_masks()[[0, 2]]]
    expected = seg.segment_batch(imgs, classes=CLASSES, masks=masks)
    got = list(seg.segment_stream(iter(imgs), classes=CLASSES, batch_size=2, masks=(m for m in masks)))
    assert len(got) == 3
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    assert not np.array_equal(got[0].labels, got[2].labels)  # the masks differ, so does the vote
    with pytest.raises(ClipSamError, match="masks ran out at image 2"):
        list(seg.segment_stream(imgs, classes=CLASSES, batch_size=2, masks=iter(masks[:2])))
    with pytest.raises(ClipSamError, match="more masks than images"):
        list(seg.segment_stream(imgs[:2], classes=CLASSES, batch_size=2, masks=masks))
    with pytest.raises(ClipSamError, match="iterable with one entry per image"):
        list(seg.segment_stream(imgs[:1], classes=CLASSES, masks=masks[0]))


def test_mask_folder_through_run_batch(tiny_clip, small_dino, tmp_path):
    """``run_batch(mask_dir=...)``: each image's masks from its file (three formats, sub-folders), outputs equal to
    ``segment`` with the same masks; a missing file stops the run before any model loads; an unreadable one fails
    that image alone."""
    from PIL import Image

    from clipsam.batch import run_batch

    seg = _segmenter(tiny_clip, small_dino, corr_merge_eps=0.05)
    seg.text_embeddings = lambda v: _planted_text()
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "masks" / "sub").mkdir(parents=True)
    imgs = {"a": _image(), "sub/b": _image(seed=3), "sub/c": _image(seed=5)}
    for name, img in imgs.items():
        Image.fromarray(img).save(tmp_path / "in" / f"{name}.png")
    np.savez(tmp_path / "masks" / "a.npz", instance_mask=paint_masks(_bool_masks()))
    np.save(tmp_path / "masks" / "sub" / "b.npy", _bool_masks()[[1, 3]])
    Image.fromarray(paint_masks(_bool_masks()[[0, 2, 4]]).astype(np.uint8)).save(tmp_path / "masks/sub/c.png")
    built = []

    def make():
        built.append(1)
        return seg

    with pytest.raises(ClipSamError, match="no mask file"):
        run_batch([str(tmp_path / "in")], tmp_path / "x", segmenter=make, mask_dir=tmp_path / "masks" / "sub")
    assert built == []  # refused before the segmenter was built
    report = run_batch(
        [str(tmp_path / "in")], tmp_path / "out", segmenter=make, classes=CLASSES, mask_dir=tmp_path / "masks"
    )
    assert (report["done"], report["failed"]) == (3, 0), report
    given = {"a": _bool_masks(), "sub/b": _bool_masks()[[1, 3]], "sub/c": _bool_masks()[[0, 2, 4]]}
    for name, img in imgs.items():
        want = seg.segment(img, classes=CLASSES, masks=given[name]).labels
        got = np.asarray(Image.open(tmp_path / "out" / f"{name}_labels.png"))
        np.testing.assert_array_equal(got, want, err_msg=name)
    (tmp_path / "out" / "a.json").unlink()
    (tmp_path / "masks" / "a.npz").write_bytes(b"PK\x03\x04 broken")
    report = run_batch(
        [str(tmp_path / "in")], tmp_path / "out", segmenter=make, classes=CLASSES, mask_dir=tmp_path / "masks"
    )
    assert (report["skipped"], report["failed"]) == (2, 1) and "a.npz" in report["failures"][0]["error"]
