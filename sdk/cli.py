"""Command line: ``clipsam segment`` (more subcommands register themselves in ``COMMANDS``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from . import __version__
from .errors import ClipSamError

__all__ = ["main", "build_parser"]

_METHODS = ("resclip", "resclip_sclip", "resclip_clearclip", "naclip", "sclip", "clearclip", "clip")
_PRESETS = ("voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff164k", "cityscapes", "ade20k")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--clip", default="ViT-B-16", help="open_clip architecture name or model-config JSON (default: ViT-B-16)")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--weights", default="openai",
                   help="open_clip pretrained tag (downloaded when online) or local checkpoint file, OpenAI or "
                        "open_clip format (default: openai)")
    w.add_argument("--random-weights", action="store_true",
                   help="random CLIP weights: for offline smoke runs only, predictions are meaningless")
    g.add_argument("--method", choices=_METHODS, default="resclip", help="dense method (default: resclip = NACLIP+RCS+SFR)")
    g.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    g.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32", help="fp16/bf16 autocast needs CUDA")
    g.add_argument("--templates", default=None, help="prompt templates: openai80 (default), openai7 or single")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipsam",
        description="Training-free open-vocabulary semantic segmentation: name classes in words, get a label per pixel.",
    )
    parser.add_argument("--version", action="version", version=f"clipsam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    seg = sub.add_parser(
        "segment", help="segment images into named classes",
        description="Segment images. Writes, per image, <name>_labels.png (palette PNG of class indices), "
                    "<name>_overlay.png (image, colours and legend) and <name>.json (classes, pixel fractions, "
                    "config, timing).",
    )
    seg.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    voc = seg.add_argument_group("vocabulary (one of --classes / --class-file, or a --preset's own)")
    voc.add_argument("--classes", help='comma-separated class names, e.g. "cat, sofa, floor"')
    voc.add_argument("--class-file", help="class file: one class per line, synonyms separated by ', '")
    voc.add_argument("--preset", choices=_PRESETS,
                     help="dataset preset: its reference settings, and its vocabulary unless classes are given")
    seg.add_argument("--out", required=True, help="output folder")
    _add_model_args(seg)
    seg.set_defaults(func=cmd_segment)
    return parser


def _make_segmenter(args, preset):
    from .segmenter import Segmenter

    weights = None if args.random_weights else args.weights
    with warnings.catch_warnings():
        if args.random_weights:  # the user asked for it; say so once on stderr instead
            warnings.simplefilter("ignore")
            print("clipsam: using RANDOM CLIP weights (--random-weights); predictions are meaningless.", file=sys.stderr)
        return Segmenter.from_pretrained(clip=args.clip, clip_weights=weights, method=args.method, preset=preset,
                                         device=args.device, precision=args.precision, templates=args.templates)


def cmd_segment(args) -> int:
    if args.classes and args.class_file:
        raise ClipSamError("give --classes or --class-file, not both")
    if not (args.classes or args.class_file or args.preset):
        raise ClipSamError("name the classes: --classes \"cat, sofa\", --class-file FILE, or --preset voc21")
    for img in args.images:
        if not Path(img).is_file():
            raise ClipSamError(f"image file not found: {img}")
    seg = _make_segmenter(args, args.preset)
    out = Path(args.out)
    for img in args.images:
        t0 = time.perf_counter()
        res = seg.segment(img, classes=args.classes, class_file=args.class_file)
        res.info["image"] = str(img)
        res.info["total_ms"] = round(1000 * (time.perf_counter() - t0), 2)
        paths = res.save(out, Path(img).stem)
        top = ", ".join(f"{k} {100 * v:.1f}%" for k, v in list(res.pixel_fractions().items())[:5])
        print(f"{img}: {res.info['total_ms']:.0f} ms  [{top}]  -> {paths['labels'].parent}/{Path(img).stem}_*")
    return 0


COMMANDS = {"segment": cmd_segment}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ClipSamError as e:
        print(f"clipsam {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
