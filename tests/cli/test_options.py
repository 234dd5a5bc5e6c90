"""The shared option groups and ``build_segmenter``: one builder for PyTorch and engines, explicit options checked
against an engine folder's manifest (also when they equal the PyTorch defaults)."""

from __future__ import annotations

import pytest

from clipsam.cli import build_parser
from clipsam.cli.options import build_segmenter, parse_scales
from clipsam.config import MULTI_SCALE_5
from clipsam.errors import ClipSamError, ManifestMismatchError


def _args(*argv):
    return build_parser().parse_args(["segment", "x.jpg", "--out", "o", *argv])


def test_options_the_engines_fix_default_to_none():
    args = _args()
    assert (args.method, args.precision, args.clip, args.weights, args.providers) == (None, None, None, None, None)


@pytest.mark.parametrize(
    "given,match",
    [
        (["--method", "resclip"], "method 'resclip'"),  # the PyTorch default, given explicitly: still checked
        (["--precision", "fp16"], "precision 'fp16'"),
        (["--clip", "ViT-B-16"], "CLIP model 'ViT-B-16'"),
    ],
)
def test_explicit_options_are_checked_against_the_manifest(engine_dir, given, match):
    args = _args("--engines", str(engine_dir("naclip")), *given)
    with pytest.raises(ManifestMismatchError, match=match):
        build_segmenter(args)


def test_the_folders_own_values_are_accepted(engine_dir):
    seg = build_segmenter(_args("--engines", str(engine_dir("naclip")), "--method", "naclip", "--precision", "fp32"))
    assert seg.config.method == "naclip" and seg.precision == "fp32"


@pytest.mark.parametrize(
    "given,match",
    [
        (["--weights", "w.pt"], "--weights / --random-weights do not apply with --engines"),
        (["--random-weights"], "--weights / --random-weights do not apply with --engines"),
        (["--sam2-weights", "s.pt"], "--sam2-weights does not apply with --engines"),
        (["--dino-weights", "d.pth"], "--dino-weights do not apply with --engines"),
        (["--automask", "sam2_hiera_l"], "--automask do not apply with --engines"),
    ],
)
def test_options_that_cannot_apply_to_engines_are_refused(tmp_path, given, match):
    with pytest.raises(ClipSamError, match=match):
        build_segmenter(_args("--engines", str(tmp_path), *given))


def test_corrclip_mask_options_need_a_corrclip_folder(engine_dir, tmp_path):
    """With --engines and no --method, CorrCLIP's mask options are checked against the folder's method (its
    manifest), before any graph loads; the masks folder is checked the same way by ``checked_mask_dir``."""
    import argparse

    from clipsam.cli.options import engine_method
    from clipsam.cli.segment import checked_mask_dir

    folder = str(engine_dir("naclip"))
    assert engine_method(_args("--engines", folder)) == "naclip"
    assert engine_method(_args("--engines", folder, "--method", "corrclip")) == "corrclip"  # checked at load
    with pytest.raises(ClipSamError, match="corrclip only"):
        build_segmenter(_args("--engines", folder, "--mask-source", "none"))
    with pytest.raises(ClipSamError, match="corrclip only"):
        checked_mask_dir(argparse.Namespace(masks=str(tmp_path), engines=folder, method=None), ["a.png"])


def test_classes_from_the_flags():
    from clipsam.cli.options import resolve_classes

    assert resolve_classes(_args("--classes", "cat, sofa")).classes == ("cat", "sofa")
    assert resolve_classes(_args("--classes", "cat, kitty\nsofa")).queries == ("cat", "kitty", "sofa")  # $(cat f)
    assert resolve_classes(_args("--preset", "voc21")) is None  # the preset's own
    for empty in ("", "  "):  # an unset shell variable: never the preset's 21 classes in silence
        with pytest.raises(ClipSamError, match="--classes is empty"):
            resolve_classes(_args("--preset", "voc21", "--classes", empty))


def test_parse_scales():
    assert parse_scales(None) is None and parse_scales("ms5") == MULTI_SCALE_5
    assert parse_scales("0.5,1") == (0.5, 1.0)
    with pytest.raises(ClipSamError, match="--scales must be"):
        parse_scales("half")


def test_choices_come_from_the_registries():
    from clipsam.config import DATASETS, METHODS
    from clipsam.refine.config import SAM2_MODELS

    seg = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices["segment"]
    choices = {a.dest: tuple(a.choices) for a in seg._actions if a.choices}
    assert choices["method"] == tuple(METHODS) and choices["preset"] == DATASETS and choices["refine"] == SAM2_MODELS


@pytest.mark.parametrize(
    "given,match",
    [
        (["--providers", "cuda,cpu"], "--providers apply to exported engines only: add --engines DIR"),
        (["--allow-provider-fallback"], "--allow-provider-fallback apply to exported engines only"),
        (["--trt-cache", "trt"], "--trt-cache apply to exported engines only"),
        (["--providers", "tensorrt", "--trt-cache", "t"], "--providers / --trt-cache apply"),
    ],
)
def test_engine_options_without_engines_are_refused(given, match):
    with pytest.raises(ClipSamError, match=match):  # they were ignored: the PyTorch model ran on the CPU
        build_segmenter(_args("--random-weights", *given))
