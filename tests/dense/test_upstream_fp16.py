"""``precision="fp16-upstream"``: the upstream fp16 arithmetic of CorrCLIP and RF-CLIP (``clipsam.dense.upstream_fp16``).

The references of ``test_rfclip.py`` and ``test_corrclip.py`` compute the way the upstream code is organised and follow
its dtypes (``.to(x.dtype)`` where upstream casts), so run on the fp16 models and fp16 text they are the upstream fp16
run. clipsam's fp16 mode is compared with them (fp16 rounding of reordered sums only), with its own fp32 mode (fp16
against fp32: the tolerance below), and checked to compute in fp16 (dtypes of intermediates; results that differ
from fp32). The comparison with the upstream code itself is in ``docs/algorithms.md`` (sections 15.8 and 16.10).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipsam.config import dense_config
from clipsam.dense.dino import dino_qk_features
from clipsam.dense.rfclip import pairwise_cosine
from clipsam.dense.text import encode_queries, encode_queries_fp16
from clipsam.dense.upstream_fp16 import Fp32LayerNorm, half_clip, half_dino
from clipsam.errors import ConfigError
from clipsam.masks import paint_masks
from clipsam.preprocess import preprocess
from clipsam.segmenter import Segmenter
from clipsam.vocabulary import Vocabulary

from ..conftest import TINY_VIT
from . import test_corrclip as corr
from . import test_rfclip as rf
from .test_corrclip import _flush_denormals, _text, small_dino  # noqa: F401  (fixtures)

FP16 = "fp16-upstream"
# fp16 against fp32 on the same weights: logits (|logit| <= ~0.3 here) within FP16_TOL, labels on >= 99 % of pixels
FP16_TOL = 5e-3


def _rf_segmenter(tiny_clip, visual, preset, precision, **overrides):
    seg = rf._segmenter(tiny_clip, visual, preset, **overrides)
    loaded = copy.copy(tiny_clip)
    object.__setattr__(loaded, "model", seg.model)
    return Segmenter(loaded, seg.config, precision=precision)


def _rf_run(tiny_clip, preset, precision, **overrides):
    visual = rf._plant_sink(tiny_clip.model.visual)
    overrides = {"rf_cluster_threshold": 0.08, "rf_text_alpha": 0.3, "rf_global_weight": 0.3, **overrides}
    seg = _rf_segmenter(tiny_clip, visual, preset, precision, **overrides)
    text, vocab = rf._planted_text()
    text = text.half() if precision == FP16 else text
    seg.text_embeddings = lambda v: text
    return seg, visual, text, vocab


# --------------------------------------------------------------------------------------------------------
# the casts
def test_half_clip_casts_like_upstream_and_copies(tiny_clip):
    model = tiny_clip.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    half = half_clip(model)
    v = half.visual
    blk = v.transformer.resblocks[0]
    for t in (v.conv1.weight, blk.attn.in_proj_weight, blk.attn.in_proj_bias, blk.attn.out_proj.weight, v.proj):
        assert t.dtype == torch.float16
    for t in (blk.mlp.c_fc.weight, half.transformer.resblocks[0].attn.in_proj_weight, half.text_projection):
        assert t.dtype == torch.float16
    for t in (v.class_embedding, v.positional_embedding, half.token_embedding.weight, half.positional_embedding):
        assert t.dtype == torch.float32  # embeddings stay fp32, as in both upstreams
    norms = [m for m in half.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(type(m) is Fp32LayerNorm and m.weight.dtype == torch.float32 for m in norms)
    # the given model is untouched
    after = model.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(before[k], after[k]) for k in before)
    assert not any(isinstance(m, Fp32LayerNorm) for m in model.modules())


def test_fp32_layer_norm_is_open_clips():
    from open_clip.transformer import LayerNormFp32

    torch.manual_seed(0)
    theirs = LayerNormFp32(64)
    with torch.no_grad():
        theirs.weight.normal_()
        theirs.bias.normal_()
    ours = Fp32LayerNorm(64)
    ours.load_state_dict(theirs.state_dict())
    x = (torch.randn(5, 64) * 30).half()
    out = ours(x)
    assert out.dtype == torch.float16
    assert torch.equal(out, theirs(x))
    assert not torch.equal(out, F.layer_norm(x, (64,), theirs.weight.half(), theirs.bias.half()))  # fp16 params


def test_half_dino_is_all_fp16_and_a_copy(small_dino):  # noqa: F811
    half = half_dino(small_dino)
    assert all(p.dtype == torch.float16 for p in half.parameters())
    assert all(p.dtype == torch.float32 for p in small_dino.parameters())
    crops = torch.randn(2, 3, 48, 64)
    with torch.inference_mode():
        f16, grid = dino_qk_features(half, crops)
        f32, _ = dino_qk_features(small_dino, crops)
    assert f16.dtype == torch.float16 and grid == (6, 8)
    diff = (f16.float() - f32).abs().max()
    assert 0 < diff < 1e-2  # fp16 rounding, not another computation


def test_fp16_text_is_upstreams_per_query_loop(tiny_clip):
    """Per query as upstream: encode_text of all templates (fp16), each divided by its norm, mean, normalised."""
    templates = ("a photo of a {}.", "a sketch of the {}.", "{}")
    vocab = Vocabulary.from_names(["cat", "traffic light", "dog"])
    half = half_clip(tiny_clip.model)
    tok = __import__("open_clip").get_tokenizer(TINY_VIT)
    ours = encode_queries_fp16(half, tok, vocab, templates, "cpu")
    assert ours.dtype == torch.float16
    rows = []
    with torch.inference_mode():
        for q in vocab.queries:
            f = half.encode_text(tok([t.format(q) for t in templates]))
            assert f.dtype == torch.float16
            f = f / f.norm(dim=-1, keepdim=True)
            m = f.mean(dim=0)
            rows.append(m / m.norm())
    ref = torch.stack(rows)
    torch.testing.assert_close(ours.float(), ref.float(), atol=2e-3, rtol=0)  # cut context: fp16 kernel rounding
    fp32 = encode_queries(tiny_clip.model, tok, vocab, templates, "cpu")
    diff = (ours.float() - fp32).abs().max()
    assert 0 < diff < FP16_TOL


def test_pairwise_cosine_rounds_products_like_cosine_similarity():
    torch.manual_seed(0)
    g = (torch.randn(2, 70, 48) * 3).half()
    ours = pairwise_cosine(g, rows=16)
    ref = F.cosine_similarity(g[:, :, None, :], g[:, None, :, :], dim=-1)
    assert ours.dtype == torch.float16 and torch.equal(ours, ref)
    n = F.normalize(g.float(), dim=-1)
    assert not torch.equal(ours, (n @ n.transpose(1, 2)).half())  # the matrix product rounds otherwise


# --------------------------------------------------------------------------------------------------------
# RF-CLIP
@pytest.mark.parametrize("preset", ["voc21", "context60"])  # whole image (fp16 to the softmax) / sliding
def test_rfclip_fp16_is_the_upstream_fp16_run(tiny_clip, preset):
    seg, visual, text, vocab = _rf_run(tiny_clip, preset, FP16)
    img = rf._image()
    ours = seg.logits(img, classes=vocab)
    inp = torch.from_numpy(preprocess(img, 64, 2048, min_side=16))[None]
    with torch.no_grad():
        ref = rf.ref_image(half_clip(visual), text, inp, seg.config, img.shape[:2], [])
    assert ref.dtype == (torch.float16 if preset == "voc21" else torch.float32)  # upstream's dtypes
    torch.testing.assert_close(torch.from_numpy(ours), ref.float(), atol=1e-4, rtol=0)  # < 1 ulp at |logit| 0.3
    res = seg.segment(img, classes=vocab)
    assert (res.labels == rf.ref_labels(ref, vocab, seg.config)).mean() > 0.999
    # fp16 against fp32: within the fp16 tolerance, yet not the fp32 numbers
    seg32 = _rf_run(tiny_clip, preset, "fp32")[0]
    fp32 = seg32.logits(img, classes=vocab)
    diff = np.abs(ours - fp32).max()
    assert 1e-5 < diff < FP16_TOL
    assert (res.labels == seg32.segment(img, classes=vocab).labels).mean() >= 0.99


def test_rfclip_fp16_computes_in_fp16(tiny_clip):
    seg = _rf_run(tiny_clip, "voc21", FP16)[0]
    assert seg.encoder.upstream_fp16 and seg.backend.fp16_tail and seg.backend.fp16_final
    assert seg.max_batch == 1  # upstream's batch size: fp16 products round differently per batch size
    text = seg.text_embeddings(None)
    with torch.inference_mode():
        patches, cls, _ = seg.encoder.encode(torch.randn(1, 3, 48, 64))
        logits = seg.encoder(torch.randn(2, 3, 48, 64), text)
    assert patches.dtype == cls.dtype == logits.dtype == torch.float16
    sliding = _rf_run(tiny_clip, "context60", FP16)[0]
    assert sliding.backend.fp16_windows and not sliding.backend.fp16_tail  # summed into float32, as upstream
    assert _rf_run(tiny_clip, "context60", FP16, pamr_iters=2)[0].backend.fp16_tail  # PAMR casts back to fp16


# --------------------------------------------------------------------------------------------------------
# CorrCLIP
def _corr_segmenter(tiny_clip, dino, precision):
    seg = corr._segmenter(tiny_clip, dino)
    out = Segmenter(copy.copy(tiny_clip), seg.config, dino=dino, precision=precision)
    text = corr._planted_text()
    text = text.half() if precision == FP16 else text
    out.text_embeddings = lambda v: text
    return out, text


def test_corrclip_fp16_is_the_upstream_fp16_run(tiny_clip, small_dino):  # noqa: F811
    seg, text = _corr_segmenter(tiny_clip, small_dino, FP16)
    img, masks = corr._image(), corr._bool_masks()
    m0 = paint_masks(masks)
    ours = seg.logits(img, classes=corr.CLASSES, masks=masks)
    inp = torch.from_numpy(preprocess(img, seg.config.short_side, 2048, min_side=16))[None]
    log: list = []
    with torch.no_grad():
        ref = corr.ref_image(half_clip(tiny_clip.model).visual, half_dino(small_dino), text, inp, m0, seg.config, log)
    assert any(isinstance(e, tuple) and isinstance(e[1], list) and len(set(e[1])) < len(e[1]) for e in log)  # merged
    # |logit| <= 1 here (the text is planted from window features): within 2 fp16 ulps; the reference's explicit
    # softmax and clipsam's SDPA (upstream's kernel) round differently
    torch.testing.assert_close(torch.from_numpy(ours), ref, atol=2e-3, rtol=0)
    res = seg.segment(img, classes=corr.CLASSES, masks=masks)
    vocab = Vocabulary.from_names(corr.CLASSES)
    ref_labels = corr.ref_labels(ref, m0, vocab.query_to_class, vocab.num_classes, seg.config)
    assert (res.labels == ref_labels).mean() > 0.995  # measured 0.9985: fp16 near-ties at logit_scale 40
    seg32, _ = _corr_segmenter(tiny_clip, small_dino, "fp32")
    fp32 = seg32.logits(img, classes=corr.CLASSES, masks=masks)
    assert 1e-5 < np.abs(ours - fp32).max() < FP16_TOL
    assert (res.labels == seg32.segment(img, classes=corr.CLASSES, masks=masks).labels).mean() >= 0.99


def test_corrclip_fp16_computes_in_fp16_on_copies(tiny_clip, small_dino):  # noqa: F811
    seg, text = _corr_segmenter(tiny_clip, small_dino, FP16)
    assert seg.dino is not small_dino and seg.model is not tiny_clip.model
    assert next(small_dino.parameters()).dtype == torch.float32 and tiny_clip.model.visual.proj.dtype == torch.float32
    with torch.inference_mode():
        logits = seg.encoder(torch.randn(1, 3, 112, 112), text, regions=torch.zeros(1, 112, 112))
    assert logits.dtype == torch.float16 and not seg.backend.fp16_tail  # upstream sums windows in float32


# --------------------------------------------------------------------------------------------------------
# refusals and the entry points
def test_fp16_upstream_is_refused_elsewhere_before_loading(tiny_clip, monkeypatch, tmp_path):
    import clipsam.models

    def no_load(*a, **k):
        raise AssertionError("weights loaded before the precision was checked")

    monkeypatch.setattr(clipsam.models, "load_clip", no_load)
    with pytest.raises(ConfigError, match="method='corrclip' or 'rfclip'.*'resclip'"):
        Segmenter.from_pretrained("ViT-B-16", None, method="resclip", precision=FP16)
    with pytest.raises(ConfigError, match="method='corrclip' or 'rfclip'"):
        Segmenter(tiny_clip, dense_config("naclip", "voc21"), precision=FP16)
    with pytest.raises(ConfigError, match="PyTorch backend"):
        Segmenter.from_engines(tmp_path / "no-such-folder", precision=FP16)


def test_cli_fp16_upstream(tmp_path, capsys, monkeypatch):
    """``--precision fp16-upstream`` through the CLI: corrclip (a narrow DINO, no masks) and rfclip (the tiny ViT's
    own sink channels added to the options, since RF-CLIP's are ViT-B/16's); refusals for other methods and engines."""
    from timm.models.vision_transformer import VisionTransformer

    import clipsam.dense.dino
    from clipsam.cli import main

    Image.fromarray(rf._image(94, 125)).save(tmp_path / "small.png")
    common = ["--classes", "person, dog", "--random-weights", "--clip", TINY_VIT, "--templates", "single"]
    common += ["--precision", FP16, "--no-text-cache"]

    def small(weights):
        torch.manual_seed(0)
        return VisionTransformer(img_size=224, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=0)

    monkeypatch.setattr(clipsam.dense.dino, "load_dino", small)
    seg = ["segment", str(tmp_path / "small.png")]
    assert main([*seg, "--out", str(tmp_path / "corr"), "--method", "corrclip", "--mask-source", "none", *common]) == 0
    summary = json.loads((tmp_path / "corr" / "small.json").read_text())
    assert summary["precision"] == FP16
    assert np.asarray(Image.open(tmp_path / "corr" / "small_labels.png")).shape == (94, 125)

    built = Segmenter.from_pretrained.__func__
    monkeypatch.setattr(
        Segmenter,
        "from_pretrained",
        classmethod(lambda cls, *a, **k: built(cls, *a, rf_sink_channels=rf.SINKS, **k)),
    )
    assert main([*seg, "--out", str(tmp_path / "rf"), "--method", "rfclip", *common]) == 0
    assert json.loads((tmp_path / "rf" / "small.json").read_text())["precision"] == FP16
    capsys.readouterr()
    assert main([*seg, "--out", str(tmp_path / "x"), "--method", "naclip", *common]) == 2
    assert "exists only for method='corrclip' or 'rfclip'" in capsys.readouterr().err
    assert main([*seg, "--out", str(tmp_path / "x"), "--engines", str(tmp_path), "--precision", FP16]) == 2
    assert "PyTorch backend" in capsys.readouterr().err


def test_text_disk_cache_keeps_fp16_apart(tiny_clip, tmp_path):
    cfg = dense_config("rfclip", "voc21", rf_sink_channels=rf.SINKS, templates=("a photo of a {}.",))
    fp32 = Segmenter(tiny_clip, cfg, text_disk_cache=tmp_path)
    half = Segmenter(tiny_clip, cfg, precision=FP16, text_disk_cache=tmp_path)
    vocab = Vocabulary.from_names(["cat", "dog"])
    assert fp32.text_disk_key(vocab) != half.text_disk_key(vocab)
    first = half.text_embeddings(vocab)
    half.text_cache = type(half.text_cache)(4)  # drop the memory cache: the second call reads the disk
    again = half.text_embeddings(vocab)
    assert first.dtype == again.dtype == torch.float16 and torch.equal(first, again)
    assert fp32.text_embeddings(vocab).dtype == torch.float32


def test_default_precision_follows_upstream_on_cuda(monkeypatch):
    """The default reproduces upstream where it runs: fp16-upstream for corrclip / rfclip on CUDA, fp32 on the CPU
    (neither upstream runs there) and for every other method; an explicit precision is kept."""
    import clipsam.segmenter as segmenter
    from clipsam.segmenter import resolve_precision

    assert resolve_precision(None, "corrclip", "cpu") == resolve_precision(None, "rfclip", "cpu") == "fp32"
    monkeypatch.setattr(segmenter, "_resolve_device", lambda d: torch.device("cuda"))
    assert resolve_precision(None, "corrclip", "cuda") == resolve_precision(None, "rfclip", "cuda") == "fp16-upstream"
    assert resolve_precision(None, "naclip", "cuda") == "fp32"
    assert resolve_precision("fp32", "corrclip", "cuda") == "fp32"
