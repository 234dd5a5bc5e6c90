"""Visual calibration: SVC and kNN arithmetic on hand-built tensors, then on the tiny ViT (encoder and scheduler)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipsam.config import dense_config
from clipsam.dense.calibration import knn_calibrate, svc_attention
from clipsam.dense.encoder import DenseEncoder
from clipsam.errors import ConfigError


def _softmax_rows(rows):
    out = []
    for r in rows:
        e = [math.exp(v) for v in r]
        out.append([v / sum(e) for v in e])
    return torch.tensor(out)


def test_svc_attention_sums_three_softmaxes_over_heads():
    # 2 heads, 2 tokens, d = 1, q = k = v per head, scale 1: the three softmaxes of a head are equal
    h0, h1 = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [2.0]])
    q = torch.stack([h0, h1])[None]  # (1, 2, 2, 1)
    s0 = _softmax_rows([[1, 0], [0, 0]])  # softmax(h0 h0^T)
    s1 = _softmax_rows([[0, 0], [0, 4]])  # softmax(h1 h1^T)
    a = s0 + s1  # (3 s0 + 3 s1) / 3: one map shared by both heads
    out = svc_attention(q, q, q, scale=1.0)
    torch.testing.assert_close(out[0, 0], a @ h0, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[0, 1], a @ h1, atol=1e-6, rtol=0)


def test_svc_attention_mixes_q_k_v_softmaxes():
    q, k, v = (torch.tensor([[[[1.0], [0.0]]]]), torch.tensor([[[[0.0], [1.0]]]]), torch.tensor([[[[2.0], [1.0]]]]))
    a = (_softmax_rows([[1, 0], [0, 0]]) + _softmax_rows([[0, 0], [0, 1]]) + _softmax_rows([[4, 2], [2, 1]])) / 3
    torch.testing.assert_close(svc_attention(q, k, v, 1.0)[0, 0], a @ v[0, 0], atol=1e-6, rtol=0)


def _unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_knn_replaces_the_least_confident_patch_by_its_weighted_neighbours():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f = torch.tensor([[_unit(0), _unit(90), _unit(50), _unit(30)]])  # confidences ~1, ~1, 0.77, 0.97 at scale 10
    out = knn_calibrate(f, text, logit_scale=10.0, k=2, quantile=0.25)  # int(0.25 * 4) = 1 patch replaced
    torch.testing.assert_close(out[0, [0, 1, 3]], f[0, [0, 1, 3]], atol=0, rtol=0)
    d3, d1 = 1 - math.cos(math.radians(20)), 1 - math.cos(math.radians(40))  # nearest: patch 3, then patch 1
    w3, w1 = 1 / (d3 + 1e-6), 1 / (d1 + 1e-6)
    m = [(w3 * a + w1 * b) / (w3 + w1) for a, b in zip(_unit(30), _unit(90))]
    norm = math.hypot(*m)
    torch.testing.assert_close(out[0, 2], torch.tensor([m[0] / norm, m[1] / norm]), atol=1e-6, rtol=0)


def test_knn_works_crop_by_crop_in_a_batch():
    g = torch.Generator().manual_seed(0)
    f = F.normalize(torch.randn(3, 20, 8, generator=g), dim=-1)
    text = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    batch = knn_calibrate(f, text, 40.0, 3, 0.5)
    alone = torch.cat([knn_calibrate(f[i : i + 1], text, 40.0, 3, 0.5) for i in range(3)])
    torch.testing.assert_close(batch, alone, atol=1e-6, rtol=0)
    changed = (batch != f).any(-1)
    assert changed.sum(1).tolist() == [10, 10, 10]  # half of each crop's patches
    torch.testing.assert_close(batch.norm(dim=-1), torch.ones(3, 20))


def test_calibration_options_are_validated():
    with pytest.raises(ConfigError, match="calibration must be one of"):
        dense_config("naclip", "voc21", calibration="svc")
    with pytest.raises(ConfigError, match="RCS and SFR"):
        dense_config("resclip", "voc21", calibration="excel")
    with pytest.raises(ConfigError, match="knn_quantile"):
        dense_config("naclip", "voc21", calibration="knn", knn_quantile=1.0)
    with pytest.raises(ConfigError, match="knn_k"):
        dense_config("naclip", "voc21", knn_k=0)
    dense_config("resclip", "voc21", calibration="knn")  # kNN works with every method


# -- on the tiny ViT ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def crops_text():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 64, 80, generator=g), F.normalize(torch.randn(5, 64, generator=g), dim=-1)


@pytest.mark.parametrize("method", ["resclip", "sclip"])
def test_none_is_bit_identical_and_knn_changes_only_low_confidence_patches(tiny_clip, crops_text, method):
    visual = tiny_clip.model.visual
    crops, text = crops_text
    cfg = dense_config(method, "voc21", temp_thd=0.0)
    with torch.inference_mode():
        ref = DenseEncoder(visual, cfg)(crops, text)
        none = DenseEncoder(visual, cfg.replace(calibration="none", knn_k=3, calibration_blocks=2))(crops, text)
        knn = DenseEncoder(visual, cfg.replace(calibration="knn", knn_quantile=0.25))(crops, text)
    assert torch.equal(none, ref)
    changed = (knn != ref).any(dim=1).flatten(1)  # (B, h*w) patches whose logits moved
    assert changed.sum(1).tolist() == [int(0.25 * 20)] * 2  # grid 4 x 5


def test_excel_equals_an_independent_two_path_forward(tiny_clip, crops_text):
    visual = tiny_clip.model.visual
    crops, text = crops_text
    n = 3
    cfg = dense_config("naclip", "voc21", calibration="excel", calibration_blocks=n)
    enc = DenseEncoder(visual, cfg)
    with torch.inference_mode():
        ours = enc(crops, text)
        x, grid = enc.embed(crops)
        blocks = list(visual.transformer.resblocks)
        x_new = None
        for i, blk in enumerate(blocks):
            if i >= len(blocks) - n:  # second path from the original path's block input
                attn = blk.attn
                y = F.linear(blk.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
                heads = [t.split(64, dim=-1) for t in y.chunk(3, dim=-1)]  # q, k, v: 2 heads of 64
                a = 0
                for h in range(2):
                    for t in (heads[0][h], heads[1][h], heads[2][h]):
                        a = a + torch.softmax(t @ t.transpose(1, 2) / 8.0, dim=-1)
                out = attn.out_proj(torch.cat([(a / 3) @ heads[2][h] for h in range(2)], dim=-1))
                x_new = (x if x_new is None else x_new) + out
            x = blk(x)  # the original path: open_clip's own block
        f = F.normalize((visual.ln_post(x_new) @ visual.proj)[:, 1:], dim=-1)
        ref = (f @ text.T).transpose(1, 2).reshape(2, 5, *grid)
        plain = DenseEncoder(visual, cfg.replace(calibration="none"))(crops, text)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert (ours - plain).abs().max() > 1e-2
    with pytest.raises(ConfigError, match="calibration_blocks=13"):
        DenseEncoder(visual, cfg.replace(calibration_blocks=13))


@pytest.mark.parametrize("calibration", ["excel", "knn"])
def test_batched_scheduler_equals_the_reference_path(make_segmenter, chelsea_small, calibration):
    seg = make_segmenter("naclip", "voc21", short_side=48, slide_crop=32, slide_stride=24, calibration=calibration)
    res = seg.segment_batch([chelsea_small, chelsea_small[:, ::-1].copy()])
    ref = seg.logits(chelsea_small)
    assert res[0].info["config"]["calibration"] == calibration
    plain = make_segmenter("naclip", "voc21", short_side=48, slide_crop=32, slide_stride=24).logits(chelsea_small)
    assert abs(ref - plain).max() > 1e-3
    from clipsam.postprocess import postprocess

    vocab = seg.vocabulary()
    labels = postprocess(
        ref, vocab.query_to_class, vocab.num_classes, seg.config.logit_scale, seg.config.prob_thd, seg.config.area_thd
    )[0]
    assert (labels == res[0].labels).all()
