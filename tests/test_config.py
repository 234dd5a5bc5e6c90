"""Presets reproduce the table of docs/algorithms.md section 13; overrides and validation."""

from __future__ import annotations

import dataclasses

import pytest

from clipsam.config import METHODS, PRESETS, DenseConfig, dense_config
from clipsam.errors import ConfigError


def test_resclip_voc21_defaults():
    c = dense_config()
    assert (c.base, c.residual, c.rcs, c.sfr) == ("naclip", False, True, True)
    assert (c.short_side, c.slide_crop, c.prob_thd, c.temp_thd, c.logit_scale) == (336, 0, 0.1, 0.5, 40.0)
    assert c.rcs_weights == (2.0, 0.3) and c.sfr_weights == (2.2, 0.7) and c.rcs_layers == (5, 6, 7, 8)
    assert (c.sfr_pamr_iters, c.sfr_pamr_dilations, c.sfr_path_check, c.sfr_blur) == (10, (8, 16), "prefix", "raster")
    assert c.vocabulary == "voc21" and c.templates == "openai80" and c.pamr_iters == 0


@pytest.mark.parametrize(
    "ds,thd,rcs,sfr,slide,short,prob",
    [
        ("voc21", 0.50, (2, 0.3), (2.2, 0.7), 0, 336, 0.1),
        ("context60", 0.30, (2, 0.3), (1.8, 0.7), 224, 336, 0.1),
        ("coco_object", 0.11, (2, 0.4), (1.8, 0.7), 224, 336, 0.1),
        ("voc20", 0.10, (2, 0.6), (2.1, 0.6), 0, 336, 0.0),
        ("context59", 0.25, (2, 0.4), (1.8, 0.7), 224, 336, 0.0),
        ("coco_stuff164k", 0.11, (2, 0.4), (1.8, 0.7), 224, 336, 0.0),
        ("cityscapes", 0.10, (2, 0.2), (2.1, 0.6), 224, 560, 0.0),
        ("ade20k", 0.25, (2, 0.3), (2.1, 0.7), 224, 336, 0.0),
    ],
)
def test_resclip_presets(ds, thd, rcs, sfr, slide, short, prob):
    c = dense_config("resclip", ds)
    assert (c.temp_thd, c.rcs_weights, c.sfr_weights, c.slide_crop, c.short_side, c.prob_thd) == (
        thd,
        rcs,
        sfr,
        slide,
        short,
        prob,
    )
    assert c.slide_stride == 112 and c.logit_scale == 40.0
    for other in ("resclip_sclip", "resclip_clearclip"):  # other bases: same configs
        o = dense_config(other, ds)
        assert (o.temp_thd, o.rcs_weights, o.sfr_weights, o.slide_crop, o.short_side) == (thd, rcs, sfr, slide, short)


def test_sclip_naclip_clearclip_presets():
    s = dense_config("sclip", "voc21")
    assert (s.logit_scale, s.prob_thd, s.area_thd, s.slide_crop, s.residual) == (65.0, 0.1, 0.1, 224, True)
    assert dense_config("sclip", "context60").logit_scale == 50.0
    assert dense_config("sclip", "coco_stuff164k").short_side == 448
    assert dense_config("sclip", "ade20k").area_thd is None
    n = dense_config("naclip", "voc21")
    assert (n.slide_crop, n.pamr_iters, n.logit_scale, n.rcs, n.sfr) == (0, 10, 40.0, False, False)
    c = dense_config("clearclip", "voc21")
    assert (c.short_side, c.slide_crop, c.slide_stride, c.logit_scale, c.prob_thd, c.vocabulary, c.pad_crops) == (
        448,
        448,
        224,
        50.0,
        0.5,
        "voc21_plain",
        True,
    )
    assert (
        dense_config("clearclip", "cityscapes").slide_crop,
        dense_config("clearclip", "cityscapes").slide_stride,
    ) == (224, 224)
    assert set(PRESETS) == set(METHODS) and all(len(v) == 8 for v in PRESETS.values())


def test_overrides_and_errors():
    c = dense_config("resclip", "voc21", slide_crop=224, prob_thd=0.2)
    assert (c.slide_crop, c.prob_thd) == (224, 0.2)
    assert dense_config("resclip", None).vocabulary is None
    with pytest.raises(ConfigError, match="unknown method"):
        dense_config("maskclip")
    with pytest.raises(ConfigError, match="unknown preset"):
        dense_config("resclip", "imagenet")
    with pytest.raises(ConfigError, match="unknown preset 'none'.*or None for open vocabulary"):
        dense_config("resclip", "none")  # the CLI's spelling, given to the API
    with pytest.raises(ConfigError, match="unknown DenseConfig option"):
        dense_config("resclip", "voc21", slide=1)
    with pytest.raises(ConfigError, match="prob_thd"):
        DenseConfig().replace(prob_thd=2.0)
    with pytest.raises(ConfigError, match="base"):
        DenseConfig().replace(base="maskclip")
    with pytest.raises(ConfigError, match="sfr_path_check"):
        DenseConfig().replace(sfr_path_check="half")
    for name in ("pamr_dilations", "sfr_pamr_dilations"):
        for bad in ((), (0,), (8, -2)):
            with pytest.raises(ConfigError, match=f"{name} must be a non-empty tuple of pixel distances >= 1"):
                dense_config("resclip", "voc21", **{name: bad})
    assert dense_config("naclip", "voc21", pamr_dilations=(1,)).post.pamr_dilations == (1,)
    bad_values = [
        (dict(rcs_layers=()), "rcs_layers must be distinct 0-based"),
        (dict(rcs_layers=(-1, 5)), "rcs_layers must be distinct 0-based"),
        (dict(rcs_layers=(5, 5)), "rcs_layers must be distinct 0-based"),
        (dict(rcs_weights=(2.0,)), r"rcs_weights must be a pair \(tau, lambda\)"),
        (dict(rcs_weights=(0.0, 0.3)), r"rcs_weights must be .* tau in \(0, 100\]"),
        (dict(sfr_weights=(2.2, 1.5)), "sfr_weights must be .* lambda in \\[0, 1\\]"),
        (dict(temp_thd=1.5), "temp_thd is a probability threshold"),
        (dict(logit_scale=0.0), "logit_scale is the softmax's inverse temperature"),
        (dict(logit_scale=float("nan")), "logit_scale must be a finite number"),
        (dict(gaussian_std=float("inf")), "gaussian_std must be a finite number"),
        (dict(scales=(1.0, float("inf"))), "scales must be a tuple of finite numbers"),
        (dict(scales=(1.0, 0.001)), r"scale 0.001 makes the short side 336 x 0.001 round to 0 pixels"),
    ]
    for kw, match in bad_values:
        with pytest.raises(ConfigError, match=match):
            dense_config("resclip", "voc21", **kw)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dense_config().schedule.short_side = 3  # frozen
    with pytest.raises(AttributeError):
        dense_config().short_side = 3  # frozen: no flat attribute to set either


def test_numpy_scalars_become_python_numbers(make_segmenter, chelsea_small, tmp_path):
    """np.int64 / np.float32 options are valid, and the config and a result's info stay JSON-serialisable (save()
    wrote the PNGs, then failed on the summary)."""
    import json

    import numpy as np

    cfg = dense_config("resclip", "voc21", short_side=np.int64(48), prob_thd=np.float32(0.25), scales=[np.float64(1)])
    assert type(cfg.short_side) is int and type(cfg.prob_thd) is float and cfg.prob_thd == 0.25
    assert cfg.scales == (1.0,) and type(cfg.scales[0]) is float
    json.dumps(dataclasses.asdict(cfg))
    seg = make_segmenter("sclip", "voc21", short_side=np.int64(32), slide_crop=np.int32(32), slide_stride=16)
    res = seg.segment(chelsea_small, classes=["cat", "grass"])
    json.dumps(res.info)
    assert res.save(tmp_path, "x")["summary"].is_file()


def test_windows_farther_apart_than_their_size_and_zero_scale_weights_are_errors():
    # the presets' stride is 112: lowering only the crop would leave pixels no window covers (NaN scores, label 0)
    with pytest.raises(ConfigError, match=r"slide_stride \(112\) is larger than slide_crop \(96\).*slide_stride <= "):
        dense_config("sclip", "voc21", slide_crop=96)
    assert dense_config("sclip", "voc21", slide_crop=96, slide_stride=96).slide_stride == 96  # touching windows
    assert dense_config("sclip", "voc21", slide_crop=0).slide_crop == 0  # whole image: the stride is unused
    with pytest.raises(ConfigError, match=r"scale_weights \(0.0, 0.0\) sum to 0"):
        dense_config("sclip", None, scales=(1.0, 0.5), combine="weighted", scale_weights=(0.0, 0.0))
    with pytest.raises(ConfigError, match="sum to 0"):
        dense_config("sclip", None, scales=(1.0, 0.5), scale_weights=(0.0, 0.0))  # prob_mean applies them too
    kept = dense_config("sclip", None, scales=(1.0, 0.5), scale_weights=(1.0, 0.0))
    assert kept.scale_weights == (1.0, 0.0)


def test_values_that_overflow_or_pad_beyond_reason_are_errors():
    for kw, why in [
        (dict(rcs_weights=(1e30, 0.3)), r"rcs_weights must be \(tau, lambda\) with tau in \(0, 100\]"),  # NaN scores
        (dict(sfr_weights=(101.0, 0.7)), r"tau in \(0, 100\]"),
        (dict(gaussian_std=1e-30), "gaussian_std must be >= 0.01 patches"),  # the normaliser underflowed: NaN
        (dict(slide_crop=224, pad_crops=True, pad_multiple=10000), r"pad_multiple 10000 is larger than the window"),
        (dict(slide_crop=0, pad_crops=True, pad_multiple=4096), r"larger than the resized image \(long_side\) 2048"),
    ]:
        with pytest.raises(ConfigError, match=why):
            dense_config("resclip", "voc21", **kw)
    ok = dense_config("resclip", "voc21", rcs_weights=(100.0, 0.3), gaussian_std=0.01, slide_crop=224, pad_multiple=224)
    assert ok.rcs_weights == (100.0, 0.3) and ok.pad_multiple == 224
    assert dense_config("corrclip", "cityscapes").pad_multiple == 56  # the presets stay valid


def test_lists_become_tuples_so_a_config_is_hashable_and_not_an_alias():
    scales, layers = [1.0, 0.5], [5, 6]
    cfg = dense_config("resclip", None, scales=scales, rcs_layers=layers, templates=["a {}."])
    scales.append(2.0)
    layers.clear()  # the caller's lists change afterwards: the frozen config does not
    assert (cfg.scales, cfg.rcs_layers, cfg.templates) == ((1.0, 0.5), (5, 6), ("a {}.",))
    assert hash(cfg) == hash(dense_config("resclip", None, scales=(1.0, 0.5), rcs_layers=(5, 6), templates=("a {}.",)))
