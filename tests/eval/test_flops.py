"""Analytic FLOP counts against hand-computed numbers for a tiny ViT, window counts, SAM2 estimate, matmul peak."""

from __future__ import annotations

import pytest

from clipsam.config import dense_config
from clipsam.eval.flops import (
    VIT_B16,
    TextSpec,
    VitSpec,
    block_flops,
    image_flops,
    measure_matmul_peak,
    pamr_flops,
    sam2_flops,
    text_flops,
)

# D = 8, L = 3 blocks, patch 4, MLP 32, E = 6. An 8 x 12 image at short side 8 stays 8 x 12: a 2 x 3 grid,
# N = 6 patches, N1 = 7 tokens.
TINY = VitSpec(width=8, layers=3, heads=2, patch=4, mlp=32, embed_dim=6)
Q = 5


def test_block_by_hand():
    qkv, scores, av, proj, mlp = 6 * 7 * 8 * 8, 2 * 7 * 7 * 8, 2 * 7 * 7 * 8, 2 * 7 * 8 * 8, 2 * 2 * 7 * 8 * 32
    assert (qkv, scores, av, proj, mlp) == (2688, 784, 784, 896, 7168)
    assert block_flops(7, 8, 32) == 12320
    assert block_flops(7, 8, 32, score_matmuls=2) == 12320 + 784
    assert block_flops(7, 8, 32, with_mlp=False) == 12320 - 7168


def test_naclip_whole_image_by_hand():
    cfg = dense_config("naclip", "voc21", short_side=8, pamr_iters=0)
    fc = image_flops(TINY, cfg, (8, 12), Q)
    assert fc.input_hw == (8, 12) and fc.windows == 1 and fc.window_shapes == [(8, 12)]
    embed = 2 * 6 * (3 * 4 * 4) * 8  # 4608
    trunk = 2 * 12320  # blocks 0..L-2
    last = 2688 + 784 + 784 + 896  # qkv + kk^T + A.V + proj: no residual, no MLP
    head = 2 * 7 * 8 * 6 + 2 * 6 * 6 * Q  # ln_post @ proj over N1 tokens, logits over N patches
    assert fc.parts == {"embed": embed, "trunk": trunk, "last": last, "head": head}
    assert fc.total == 4608 + 24640 + 5152 + 1032


def test_variants_by_hand():
    base = dict(short_side=8, pamr_iters=0, slide_crop=0)
    sclip = image_flops(TINY, dense_config("sclip", "voc21", **base), (8, 12), Q)
    assert sclip.parts["last"] == 12320 + 784  # qq^T + kk^T, residual and MLP kept
    clear = image_flops(TINY, dense_config("clearclip", "voc21", **base), (8, 12), Q)
    assert clear.parts["last"] == 5152
    # ResCLIP: 4 RCS score matmuls in the last block; SFR = one more last block + head + blur + PAMR at crop size.
    res = image_flops(TINY, dense_config("resclip", "voc21", **base), (8, 12), Q)
    last = 5152 + 4 * 784
    assert res.parts["last"] == last
    k = 7  # min(N = 6, int(6 * 5 + 1)) = 6, made odd
    pamr = (
        2 * 10 * 16 * Q * 8 * 12 + 8 * 12 * 3 * (3 * 16 + 3 * 18) + 8 * 12 * 4 * 16
    )  # 10 iterations, dilations (8, 16)
    assert pamr_flops(8, 12, Q, 10, (8, 16)) == pamr
    assert res.parts["sfr"] == last + res.parts["head"] + 2 * 6 * 6 * k + pamr
    # NACLIP's own final PAMR at the original size
    nac = image_flops(TINY, dense_config("naclip", "voc21", short_side=8), (8, 12), Q)
    assert nac.parts["pamr"] == pamr


def test_sliding_windows_follow_the_preset():
    # 375 x 500 at short side 336 -> 336 x 448; crop 224, stride 112 -> 2 x 3 windows of 224 x 224 (14 x 14 grid)
    fc = image_flops(VIT_B16, dense_config("naclip", "ade20k"), (375, 500), 150)
    assert fc.input_hw == (336, 448) and fc.windows == 6 and set(fc.window_shapes) == {(224, 224)}
    one = image_flops(VIT_B16, dense_config("naclip", "ade20k", short_side=224, pamr_iters=0), (224, 224), 150)
    assert one.windows == 1 and fc.parts["trunk"] == 6 * one.parts["trunk"]
    assert one.parts["trunk"] == 11 * block_flops(197, 768, 3072)
    # ClearCLIP, crop 448 stride 224: 448 x 597 -> rows (448-448+223)//224+1 = 1, columns (597-448+223)//224+1 = 2
    clear = image_flops(VIT_B16, dense_config("clearclip", "ade20k"), (375, 500), 150)
    assert clear.input_hw == (448, 597) and clear.windows == 1 * 2 and clear.window_shapes == [(448, 448)] * 2
    # a window smaller than the crop is padded to a patch multiple: 40 x 50 -> 48 x 64
    small = image_flops(VIT_B16, dense_config("clearclip", "ade20k", short_side=40), (40, 50), 150)
    assert small.windows == 1 and small.window_shapes == [(48, 64)]
    # ViT-B/16 on one 224 x 224 window, plain CLIP: the usual "17.6 GFLOPs" of ViT-B/16 are multiply-adds
    plain = image_flops(VIT_B16, dense_config("clip", "voc21", short_side=224, slide_crop=0), (224, 224), 1)
    assert 2 * 17.4 < plain.gflop < 2 * 17.8


def test_text_and_sam2_estimates():
    spec = TextSpec(width=8, layers=2, mlp=32, context=7, embed_dim=6)
    assert text_flops(spec, 3) == 3 * (2 * 12320 + 2 * 8 * 6)
    assert sam2_flops(0) == 0.0
    assert sam2_flops(2, encoder_params=100, decoder_params=10, image_tokens=4) == 2 * 100 * 4 + 2 * 2 * 10 * 4
    assert 200e9 < sam2_flops(1) < 300e9  # hiera-t: 2 * 27.2 M * 4096 + 2 * 4.2 M * 4096


def test_from_model(tiny_clip):
    spec = VitSpec.from_visual(tiny_clip.model.visual)
    assert spec == VitSpec(width=128, layers=12, heads=2, patch=16, mlp=512, embed_dim=64)
    assert TextSpec.from_model(tiny_clip.model) == TextSpec(width=64, layers=2, mlp=256, context=77, embed_dim=64)


def test_matmul_peak_is_positive_and_cached():
    peak = measure_matmul_peak("cpu", n=128, seconds=0.01)
    assert peak > 0.01 and measure_matmul_peak("cpu", n=128, seconds=0.01) == peak
    with pytest.raises(KeyError):
        measure_matmul_peak("cpu", dtype="int3", n=16)


def test_scales_and_flip_multiply_the_members():
    one = image_flops(VIT_B16, dense_config("naclip", "ade20k"), (375, 500), 150)
    ms = image_flops(VIT_B16, dense_config("naclip", "ade20k", scales=(0.5, 1.0), flip=True), (375, 500), 150)
    half = image_flops(VIT_B16, dense_config("naclip", "ade20k", short_side=168, long_side=1024), (375, 500), 150)
    assert ms.input_hw == one.input_hw == (336, 448)
    assert ms.windows == 2 * (one.windows + half.windows)
    assert ms.total == pytest.approx(2 * (one.total + half.total))


def _measured(fn) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn()
    return float(counter.get_total_flops())


def test_rfclip_and_corrclip_windows_match_a_flop_counter(tiny_clip):
    """The analytic counts of one window against PyTorch's FLOP counter on the encoders themselves (the counter
    also sees what the analytic count leaves out: CorrCLIP's mask class tokens, RF-CLIP's text adaptation)."""
    import warnings

    import torch

    from clipsam.dense.corrclip import CorrClipEncoder
    from clipsam.dense.dino import load_dino
    from clipsam.dense.rfclip import RFClipEncoder

    visual = tiny_clip.model.visual
    spec = VitSpec.from_visual(visual)
    text = torch.nn.functional.normalize(torch.randn(Q, spec.embed_dim), dim=-1)
    crops = torch.randn(1, 3, 112, 112)
    rf = dense_config("rfclip", "voc21", rf_sink_channels=(4,), short_side=112)
    want = sum(image_flops(spec, rf, (112, 112), Q).parts.values())
    got = _measured(lambda: RFClipEncoder(visual, rf)(crops, text))
    assert abs(got - want) / want < 0.05, (got, want)
    corr = dense_config("corrclip", "voc21", short_side=112, slide_crop=112, slide_stride=112)
    fc = image_flops(spec, corr, (112, 112), Q)
    assert fc.window_shapes == [(112, 112)] and fc.parts["dino"] > fc.parts["trunk"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = CorrClipEncoder(visual, load_dino(None), corr)
    regions = torch.zeros(1, 112, 112)
    regions[:, :56] = 1
    got = _measured(lambda: enc(crops, text, regions=regions))
    assert abs(got - fc.total) / fc.total < 0.05, (got, fc.total)


def test_corrclip_windows_are_padded_to_56():
    cfg = dense_config("corrclip", "voc21", short_side=100)
    fc = image_flops(VIT_B16, cfg, (100, 150), Q)
    assert fc.window_shapes == [(112, 168)]  # one 100 x 150 window, padded to multiples of 56
