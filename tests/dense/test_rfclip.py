"""RF-CLIP (``method="rfclip"``) against an independent implementation written from ``docs/algorithms.md`` section 15.

The reference below computes the way the upstream code is organised: sequence-first tokens, one block at a time with
its kk map kept in a list, denoising with a freshly built depthwise ``nn.Conv2d``, the guide's similarities with a
broadcast ``F.cosine_similarity``, clusters from scipy's complete linkage, the text adjustment as a Python loop over
clusters, and the image assembled window by window. It shares no code with ``clipsam.dense.rfclip``.

Random weights leave RF-CLIP's branches idle, so the inputs are planted:
* denoising: residual channel 4 carries the red plane through every block (``_plant_sink``) and the flagging
  threshold is lowered (``rf_sink_sigma=1.5``); on an image whose left 60 % is red, patches are flagged in each of
  the 12 calls and others are not (checked per layer over the windows), border patches included;
* clustering and text adjustment: planted query embeddings (``_planted_text``): synonyms of a class within cosine
  distance ~0.015, two classes at ~0.09, others random; thresholds chosen on both sides of these;
* global semantics: one whole-image preset (the window's own CLS), one sliding preset with the whole image's CLS, and
  one with each window's own CLS (Cityscapes).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsam.config import dense_config
from clipsam.dense.rfclip import RFClipEncoder, adapt_text
from clipsam.errors import ConfigError
from clipsam.ops.rfclip import adapt_text as adapt_text_np
from clipsam.ops.rfclip import cluster_queries, cluster_table, cosine_distances, rf_window_logits
from clipsam.segmenter import Segmenter
from clipsam.vocabulary import Vocabulary

from .test_encoder import _pamr_conv

SINKS = (4, 50, 100)  # the tiny test ViT is 128 wide; RF-CLIP's own channels are ViT-B/16's
MEAN = np.array([0.48145466, 0.4578275, 0.40821073]) * 255
STD = np.array([0.26862954, 0.26130258, 0.27577711]) * 255


@pytest.fixture(autouse=True, scope="module")
def _flush_denormals():
    """QuickGELU of random weights yields denormal floats, and CPU matmuls over them run ~50x slower; both sides of
    every comparison here run with denormals flushed to zero (restored after the module)."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


# --------------------------------------------------------------------------------------------------------
# reference
def _tokens(visual, img):
    p = visual.conv1.kernel_size[0]
    gh, gw = img.shape[-2] // p, img.shape[-1] // p
    x = visual.conv1(img.to(visual.conv1.weight.dtype)).reshape(1, visual.conv1.out_channels, -1).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.to(x.dtype) + torch.zeros(1, 1, x.shape[-1], dtype=x.dtype), x], dim=1)
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
    return visual.ln_pre(x + pos.to(x.dtype)).permute(1, 0, 2), (gh, gw)  # (1+N, 1, D); fp16 as upstream's fp16 run


def _heads(attn, h):
    n, _, d = h.shape
    nh = attn.num_heads
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    return [t.contiguous().view(n, nh, d // nh).transpose(0, 1) for t in (q, k, v)]  # (heads, L, d)


def _merge(o):
    return o.transpose(0, 1).reshape(o.shape[1], 1, -1)


def _block(blk, x):
    q, k, v = _heads(blk.attn, blk.ln_1(x))
    s = q.shape[-1] ** -0.5
    kk = torch.softmax((k * s) @ k.transpose(1, 2), dim=-1)
    x = x + blk.attn.out_proj(_merge(torch.softmax((q * s) @ k.transpose(1, 2), dim=-1) @ v))
    return x + blk.mlp(blk.ln_2(x)), kk


def _denoise(x, grid, channels, sigma, alpha, flagged_log):
    f = x[1:, 0]  # (N, D)
    fmin = f.min(-1, keepdim=True)[0]
    fn = (f - fmin) / (f - fmin).sum(-1, keepdim=True).clamp(min=1e-8)
    mask = fn[:, list(channels)].max(-1)[0] > sigma * (1.0 / f.shape[-1])
    flagged_log.append(float(mask.float().mean()))
    h, w = grid
    conv = torch.nn.Conv2d(f.shape[1], f.shape[1], 3, padding=1, groups=f.shape[1], bias=False)
    conv.weight.data.fill_(1 / 9)
    conv = conv.to(f.dtype)  # as upstream: built in float32, then cast to the features' dtype
    planes = f.T.reshape(1, -1, h, w)
    fp = torch.where(mask.view(1, 1, h, w), conv(planes), planes).reshape(f.shape[1], -1).T
    out = x.clone()
    out[1:, 0] = (1 - alpha) * out[1:, 0] + alpha * fp
    return out


def _enhance(x, g, beta):
    gp = g[1:, 0]
    s = F.cosine_similarity(gp[:, None, :], gp[None, :, :], dim=-1)
    s[s < beta] = 0
    x = x.clone()
    x[1:, 0] = s @ x[1:, 0]
    return x


def ref_encode(visual, img, rf, flagged_log):
    """(1,3,H,W) -> patch features (N, E), CLS embedding (E,), grid."""
    x, grid = _tokens(visual, img)
    blocks = list(visual.transformer.resblocks)
    args = (grid, rf.rf_sink_channels, rf.rf_sink_sigma, rf.rf_denoise_alpha, flagged_log)
    kks, guides = [], []
    for blk in blocks[:-1]:
        x, kk = _block(blk, x)
        x = _denoise(x, *args)
        kks.append(kk)
        guides.append(x)
    xl = _denoise(_block(blocks[-1], x)[0], *args)
    guides.append(xl)
    cls = visual.ln_post(xl[0, 0]) @ visual.proj
    g = torch.stack(guides).mean(0)
    outs = []
    for z in (_enhance(x, g, rf.rf_enhance_beta), _enhance(g, g, rf.rf_enhance_beta)):
        q, k, v = _heads(blocks[-1].attn, blocks[-1].ln_1(z))
        s = q.shape[-1] ** -0.5
        last = torch.softmax((k * s) @ k.transpose(1, 2), dim=-1)
        a = torch.stack([m[:, 1:, 1:] for m in kks + [last]]).mean(0)
        outs.append(blocks[-1].attn.out_proj(_merge(a @ v[:, 1:])))
    patches = visual.ln_post(torch.stack(outs).mean(0)[:, 0]) @ visual.proj
    return patches, cls, grid


def ref_clusters(text, threshold):
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    labels = fcluster(
        linkage(pdist(np.asarray(text, np.float64), "cosine"), method="complete"), threshold, criterion="distance"
    )
    return sorted(sorted(np.nonzero(labels == c)[0].tolist()) for c in np.unique(labels))


def ref_window(visual, text, clusters, crop, whole, rf, flagged_log):
    pf, cls, (gh, gw) = ref_encode(visual, crop, rf, flagged_log)
    pf = pf / pf.norm(dim=-1, keepdim=True)
    if whole is not None:
        cls = ref_encode(visual, whole, rf, [])[1]
    g = (cls / cls.norm()) @ text.T
    adj = text.clone()
    pfn = F.normalize(pf, dim=1)
    for members in clusters:
        idx = np.asarray(sorted(members))
        c = int(idx[np.argmax(g.numpy()[idx])])
        t = F.normalize(text[c][None], dim=1)
        top = torch.topk((pfn @ t.T)[:, 0], min(rf.rf_topk, pf.shape[0])).indices
        adj[c] = F.normalize(
            (1 - rf.rf_text_alpha) * t[0] + rf.rf_text_alpha * F.normalize(pf[top].mean(0), dim=0), dim=0
        )
    lg = (pf @ adj.T) * (1 - rf.rf_global_weight) + g[None] * rf.rf_global_weight
    return F.interpolate(lg.T.reshape(1, -1, gh, gw), size=crop.shape[-2:], mode="bilinear", align_corners=False)


def ref_image(visual, text, inp, cfg, ori_hw, flagged_log):
    """(Q, H0, W0) logits of the normalised image (1,3,H,W), as upstream's predict."""
    rf, sc = cfg.rfclip, cfg.schedule
    clusters = ref_clusters(text.numpy(), rf.rf_cluster_threshold)
    h, w = inp.shape[-2:]
    if sc.slide_crop > 0:
        preds = torch.zeros(1, text.shape[0], h, w)
        count = torch.zeros(1, 1, h, w)
        nh = max(h - sc.slide_crop + sc.slide_stride - 1, 0) // sc.slide_stride + 1
        nw = max(w - sc.slide_crop + sc.slide_stride - 1, 0) // sc.slide_stride + 1
        for i in range(nh):
            for j in range(nw):
                y2, x2 = min(i * sc.slide_stride + sc.slide_crop, h), min(j * sc.slide_stride + sc.slide_crop, w)
                y1, x1 = max(y2 - sc.slide_crop, 0), max(x2 - sc.slide_crop, 0)
                whole = None if rf.rf_global_source == "window" else inp
                preds[:, :, y1:y2, x1:x2] += ref_window(
                    visual, text, clusters, inp[:, :, y1:y2, x1:x2], whole, rf, flagged_log
                )
                count[:, :, y1:y2, x1:x2] += 1
        lg = preds / count
    else:
        lg = ref_window(visual, text, clusters, inp, None, rf, flagged_log)
    lg = F.interpolate(lg, size=ori_hw, mode="bilinear", align_corners=False)
    if cfg.post.pamr_iters:
        guide = F.interpolate(inp, size=ori_hw, mode="bilinear", align_corners=False)
        lg = _pamr_conv(guide, lg.float(), cfg.post.pamr_iters, cfg.post.pamr_dilations).to(text.dtype)  # as upstream
    return lg[0]


def ref_labels(logits, vocab, cfg):
    p = torch.softmax(logits * cfg.post.logit_scale, dim=0)
    q2c = torch.tensor(vocab.query_to_class)
    probs = torch.stack([p[q2c == c].max(0)[0] for c in range(vocab.num_classes)])
    pred = probs.argmax(0)
    pred[probs.max(0)[0] < cfg.post.prob_thd] = 0
    return pred.numpy()


# --------------------------------------------------------------------------------------------------------
# planted inputs
def _plant_sink(visual, channel=4, value=1.0):
    """A copy of ``visual`` whose residual channel ``channel`` carries the red plane through every block: the patch
    embedding's filter of that channel sees only red, and no block writes to the channel (attention and MLP output
    rows zeroed), so red patches stay flagged as the residual stream grows."""
    v = copy.deepcopy(visual)
    with torch.no_grad():
        v.conv1.weight[channel] = 0
        v.conv1.weight[channel, 0] = value
        for blk in v.transformer.resblocks:
            for lin in (blk.attn.out_proj, blk.mlp.c_proj):
                lin.weight[channel] = 0
                lin.bias[channel] = 0
    return v


def _image(h=64, w=96, seed=0):
    """A dark noisy image whose left 60 % is red (the planted sink channel fires there) with a blue-ish patch."""
    rng = np.random.RandomState(seed)
    img = rng.rand(h, w, 3) * 40
    img[:, : int(w * 0.6), 0] = 255
    img[h // 2 :, w // 4 : w // 2, 2] = 160
    return img.astype(np.uint8)


def _planted_text(dim=64, seed=0):
    """12 queries of 6 classes: four synonym groups (distances ~0.015), classes 3 and 4 (queries 8, 9) at ~0.09."""
    g = torch.Generator().manual_seed(seed)
    base = F.normalize(torch.randn(6, dim, generator=g), dim=-1)
    base[4] = F.normalize(base[3] + 0.36 * F.normalize(torch.randn(dim, generator=g), dim=0), dim=0)
    rows, q2c = [], []
    for c, n in enumerate((3, 3, 2, 1, 1, 2)):
        for _ in range(n):
            rows.append(F.normalize(base[c] + 0.12 * F.normalize(torch.randn(dim, generator=g), dim=0), dim=0))
            q2c.append(c)
    names = [[f"c{c}q{i}" for i in range(n)] for c, n in enumerate((3, 3, 2, 1, 1, 2))]
    return torch.stack(rows), Vocabulary.from_synonyms(names)


def _segmenter(tiny_clip, visual, preset, **overrides):
    cfg = dense_config(
        "rfclip",
        preset,
        rf_sink_channels=SINKS,
        rf_sink_sigma=1.5,
        short_side=64,
        templates=("a photo of a {}.",),
        **overrides,
    )
    if cfg.schedule.slide_crop:
        cfg = cfg.replace(slide_crop=48, slide_stride=32)
    loaded = copy.copy(tiny_clip)
    model = copy.deepcopy(tiny_clip.model)  # a shallow copy would share (and overwrite) the session model's modules
    model.visual = visual
    object.__setattr__(loaded, "model", model)
    return Segmenter(loaded, cfg)


# --------------------------------------------------------------------------------------------------------
def test_cluster_queries_matches_scipy_on_planted_text():
    text, _ = _planted_text()
    d = cosine_distances(text.numpy())
    assert 0.005 < d[0, 1] < 0.03 and 0.05 < d[8, 9] < 0.1  # planted as documented
    for t in (0.0, 0.03, 0.05, 0.08, 0.12, 0.5, 1.5):
        ours = sorted(cluster_queries(text.numpy(), t))
        assert ours == ref_clusters(text.numpy(), t), t
    assert len(cluster_queries(text.numpy(), 0.05)) == 6 and len(cluster_queries(text.numpy(), 0.12)) == 5


def test_cluster_threshold_is_inclusive_and_duplicates_merge_first():
    text, _ = _planted_text()
    t = text.numpy()
    d = cosine_distances(t)[0, 1]
    assert [0, 1] in cluster_queries(t[:2], d)  # a merge at exactly the threshold is kept (<=)
    assert cluster_queries(t[:2], np.nextafter(d, 0)) == [[0], [1]]
    dup = np.concatenate([t[:1], t[:1], t[5:6]])
    assert cluster_queries(dup, 0.0) == [[0, 1], [2]]  # exact duplicates: distance 0


def test_adapt_text_picks_first_of_tied_queries_and_the_top_patches():
    text, _ = _planted_text()
    table = cluster_table([[0, 1, 2], [3], [4, 5]])
    g = torch.zeros(2, 12)
    g[0, [1, 2]] = 0.9  # tie inside the first cluster: query 1 (the lower index) moves
    g[1, 2] = 0.9
    g[:, 5] = 0.5
    patches = F.normalize(torch.randn(2, 9, 64), dim=-1)
    patches[:, 7] = F.normalize(text[1] + text[2], dim=0)  # the patches most similar to queries 1 and 2
    ours = adapt_text(patches, text, g, torch.from_numpy(table), 0.3, 2)
    host = adapt_text_np(patches.numpy(), text.numpy(), g.numpy(), table, 0.3, 2)
    np.testing.assert_allclose(ours.numpy(), host, atol=1e-6)
    for b, moved in ((0, [1, 3, 5]), (1, [2, 3, 5])):
        changed = (ours[b] - text).abs().amax(-1) > 1e-6
        assert changed.nonzero()[:, 0].tolist() == moved
        top = torch.topk(patches[b] @ text[moved[0]], 2).indices
        expect = F.normalize(0.7 * text[moved[0]] + 0.3 * F.normalize(patches[b, top].mean(0), dim=0), dim=0)
        torch.testing.assert_close(ours[b, moved[0]], expect, atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset", ["voc21", "context60", "cityscapes"])  # own CLS / image CLS / window CLS
def test_rfclip_matches_reference(tiny_clip, preset):
    visual = _plant_sink(tiny_clip.model.visual)
    seg = _segmenter(tiny_clip, visual, preset, rf_cluster_threshold=0.08, rf_text_alpha=0.3, rf_global_weight=0.3)
    text, vocab = _planted_text()
    seg.text_embeddings = lambda v: text
    img = _image()
    ours = seg.logits(img, classes=vocab)
    from clipsam.preprocess import preprocess

    inp = torch.from_numpy(preprocess(img, 64, 2048, min_side=16))[None]
    flagged: list[float] = []
    with torch.no_grad():
        ref = ref_image(visual, text, inp, seg.config, img.shape[:2], flagged)
    per_layer = np.asarray(flagged).reshape(-1, 12)  # (windows, layers): share of flagged patches
    assert (per_layer.max(0) > 0).all() and (per_layer.min(0) < 1).all()  # fired in every layer, not everywhere
    assert len(cluster_queries(text.numpy(), 0.08)) == 6  # synonym groups merged, classes 3 and 4 not
    torch.testing.assert_close(torch.from_numpy(ours), ref, atol=2e-5, rtol=0)
    labels = seg.segment_batch([img, _image(seed=1)], classes=vocab)
    assert (labels[0].labels == ref_labels(ref, vocab, seg.config)).mean() > 0.999
    assert len(np.unique(labels[0].labels)) > 1


def test_rfclip_pamr_matches_reference(tiny_clip):
    visual = _plant_sink(tiny_clip.model.visual)
    seg = _segmenter(tiny_clip, visual, "context60", pamr_iters=10, rf_text_alpha=0.3)
    text, vocab = _planted_text()
    seg.text_embeddings = lambda v: text
    img = _image()
    from clipsam.preprocess import preprocess

    inp = torch.from_numpy(preprocess(img, 64, 2048, min_side=16))[None]
    with torch.no_grad():
        ref = ref_image(visual, text, inp, seg.config, img.shape[:2], [])
    res = seg.segment(img, classes=vocab)
    assert (res.labels == ref_labels(ref, vocab, seg.config)).mean() > 0.999


def test_host_window_head_equals_the_torch_one(tiny_clip):
    visual = _plant_sink(tiny_clip.model.visual)
    cfg = dense_config("rfclip", "voc21", rf_sink_channels=SINKS, rf_text_alpha=0.2, rf_global_weight=0.25)
    enc = RFClipEncoder(visual, cfg)
    text, _ = _planted_text()
    crops = torch.randn(2, 3, 48, 64)
    with torch.inference_mode():
        ours = enc(crops, text)
        patches, cls, grid = enc.encode(crops)
    table = cluster_table(cluster_queries(text.numpy(), cfg.rfclip.rf_cluster_threshold))
    host = rf_window_logits(patches.numpy(), cls.numpy(), text.numpy(), table, 0.2, 0.25, 2, grid)
    np.testing.assert_allclose(ours.numpy(), host, atol=1e-5)


def test_batched_multiscale_flip_equals_each_image_alone(tiny_clip):
    visual = _plant_sink(tiny_clip.model.visual)
    seg = _segmenter(tiny_clip, visual, "context60", scales=(1.0, 0.75), flip=True)
    text, vocab = _planted_text()
    seg.text_embeddings = lambda v: text
    a, b = _image(), _image(72, 80, seed=3)
    both = seg.segment_batch([a, b], classes=vocab)
    for img, res in zip((a, b), both):
        alone = seg.segment(img, classes=vocab)
        np.testing.assert_array_equal(res.labels, alone.labels)
        np.testing.assert_allclose(res.scores, alone.scores, atol=1e-6)


def test_rfclip_config_errors(tiny_clip):
    with pytest.raises(ConfigError, match="rf_sink_channels"):
        RFClipEncoder(tiny_clip.model.visual, dense_config("rfclip", "voc21"))  # ViT-B/16 channels, 128-wide model
    with pytest.raises(ConfigError, match="own last block"):
        dense_config("rfclip", "voc21", rcs=True)
    with pytest.raises(ConfigError, match="rf_global_source"):
        dense_config("rfclip", "voc21", rf_global_source="whole")
    # a cut at 1 or above zeroed every similarity (a patch's own too) and the labels came out as -1
    for beta in (1.0, 5.0, -1.5):
        with pytest.raises(ConfigError, match=r"rf_enhance_beta is a cosine-similarity cut and must be in \[-1, 1\)"):
            dense_config("rfclip", "voc21", rf_enhance_beta=beta)
    with pytest.raises(ConfigError, match="rf_sink_sigma must be > 0"):
        dense_config("rfclip", "voc21", rf_sink_sigma=0.0)
    assert dense_config("rfclip", "voc21", rf_enhance_beta=-1.0).rfclip.rf_enhance_beta == -1.0


@pytest.mark.slow
def test_rfclip_vitb16_matches_reference():
    """The real ViT-B/16 architecture (random weights) with RF-CLIP's own sink channels and threshold."""
    import warnings

    from clipsam.models import load_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = load_clip("ViT-B-16-quickgelu", None)
    visual = _plant_sink(clip.model.visual, 4, 0.3)
    cfg = dense_config("rfclip", "voc21", rf_text_alpha=0.3, rf_global_weight=0.3, rf_cluster_threshold=0.08)
    enc = RFClipEncoder(visual, cfg)
    text, _ = _planted_text(512)
    img = torch.from_numpy(((_image(96, 128).astype(np.float32) - MEAN) / STD).astype(np.float32)).permute(2, 0, 1)
    flagged: list[float] = []
    with torch.inference_mode():
        ours = F.interpolate(enc(img[None], text), size=(96, 128), mode="bilinear", align_corners=False)[0]
        ref = ref_image(visual, text, img[None], cfg.replace(slide_crop=0), (96, 128), flagged)
    assert all(0 < f < 1 for f in flagged), flagged  # measured: 21-63 % of the patches in each of the 12 calls
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=0)


def test_planted_segmenters_leave_the_session_model_alone(tiny_clip):
    before = {k: v.clone() for k, v in tiny_clip.model.state_dict().items()}
    visual = tiny_clip.model.visual
    _segmenter(tiny_clip, _plant_sink(visual), "voc21")
    assert tiny_clip.model.visual is visual
    after = tiny_clip.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
