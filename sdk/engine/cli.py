"""Command line for exported engines: ``clipsam export`` and ``clipsam segment --engines DIR``.

``sdk/cli.py`` wires these in: ``register(subparsers)`` adds the ``export`` command, ``add_segment_arguments(parser)``
adds the engine options to ``segment``, and ``cmd_segment`` hands over to ``segment_with_engines(args)`` when
``--engines`` is given. Exporting needs torch (the ``torch``, ``export`` and, for SAM2, ``sam2`` extras); segmenting
with engines does not.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from pathlib import Path

from ..config import positive_int
from ..device import parse_device
from ..errors import ClipSamError, Interrupted
from ..paths import output_dir

__all__ = ["register", "add_segment_arguments", "cmd_export", "segment_with_engines", "check_engine_args"]

_METHODS = ("resclip", "resclip_sclip", "resclip_clearclip", "naclip", "sclip", "clearclip", "clip")
_PRESETS = ("voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff164k", "cityscapes", "ade20k")
_SAM2 = ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l")
_CLI_DEFAULTS = {"method": "resclip", "precision": "fp32", "clip": "ViT-B-16"}  # sdk/cli.py's defaults: not a request when unchanged


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``clipsam export`` to the CLI's subparsers; returns its parser."""
    p = subparsers.add_parser(
        "export", help="export validated ONNX engines (CLIP text, dense encoder, SAM2) to a folder",
        description="Export the ONNX graphs of one CLIP model, method and preset (and optionally SAM2) into an engine "
                    "folder, validate each against PyTorch (table printed), and write manifest.json and trtexec.sh. "
                    "Run them with: clipsam segment --engines DIR (no torch needed).")
    p.add_argument("--out", required=True, help="engine folder to create")
    g = p.add_argument_group("models")
    g.add_argument("--clip", default="ViT-B-16", help="open_clip architecture name or model-config JSON (default: ViT-B-16)")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--weights", default="openai", help="open_clip pretrained tag or checkpoint file (default: openai)")
    w.add_argument("--random-weights", action="store_true", help="random CLIP weights (tests and smoke runs only)")
    from ..cli import add_quick_gelu_arg

    add_quick_gelu_arg(g)
    g.add_argument("--method", choices=_METHODS, default="resclip", help="dense method (default: resclip)")
    g.add_argument("--preset", default="voc21", choices=_PRESETS + ("none",),
                   help="dataset preset (settings and vocabulary); 'none' for open vocabulary (default: voc21)")
    g.add_argument("--templates", default=None, help="prompt templates: openai80 (default), openai7 or single")
    g.add_argument("--sam2", choices=_SAM2, default=None, help="also export this SAM2 model (refinement)")
    s = g.add_mutually_exclusive_group()
    s.add_argument("--sam2-weights", default=None, help="SAM2 checkpoint file (default: download the official one)")
    s.add_argument("--sam2-random-weights", action="store_true", help="random SAM2 weights (tests only)")
    o = p.add_argument_group("graphs")
    o.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="graph precision; IO stays fp32")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default: 17)")
    o.add_argument("--max-batch", type=int, default=None,
                   help="windows per dense-encoder call (default: 8 when sliding, 2 for whole images)")
    o.add_argument("--max-side", type=int, default=1024,
                   help="largest whole-image side in pixels the dense graphs serve (default: 1024)")
    o.add_argument("--max-images", type=int, default=4, help="images per SAM2 encoder call (default: 4)")
    o.add_argument("--max-prompts", type=int, default=64, help="prompts per SAM2 decoder call (default: 64)")
    o.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime vs PyTorch parity check")
    o.add_argument("--no-optimize", action="store_true", help="skip ONNX Runtime's offline graph optimisation")
    o.add_argument("--overwrite", action="store_true", help="replace an existing engine folder")
    o.add_argument("--quiet", action="store_true", help="print only errors")
    p.set_defaults(func=cmd_export)
    return p


def cmd_export(args) -> int:
    from ..export.engines import export_engines

    log = None if args.quiet else print
    with warnings.catch_warnings():
        if args.random_weights or args.sam2_random_weights:
            warnings.simplefilter("ignore")
            print("clipsam: exporting RANDOM weights (--random-weights); the engines' predictions are meaningless.",
                  file=sys.stderr)
        overrides = {"templates": args.templates} if args.templates else {}
        t0 = time.perf_counter()
        with _interrupted_export(args.out):
            export_engines(
                args.out, clip=args.clip, clip_weights=None if args.random_weights else args.weights,
                method=args.method, preset=None if args.preset == "none" else args.preset, sam2=args.sam2,
                sam2_weights=args.sam2_weights, sam2_random_weights=args.sam2_random_weights, precision=args.precision,
                opset=args.opset, max_batch=args.max_batch, max_side=args.max_side, max_images=args.max_images,
                max_prompts=args.max_prompts, validate=not args.no_validate, optimize=not args.no_optimize,
                overwrite=args.overwrite, log=log, quick_gelu=args.quick_gelu, **overrides)
    if log:
        log(f"clipsam export: done in {time.perf_counter() - t0:.0f} s")
    return 0


@contextlib.contextmanager
def _interrupted_export(out):
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(f"the engine folder {out} is incomplete (it has no manifest.json, so it will not be used). "
                          "Run the same command again with --overwrite.") from None


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the exported-engine options to ``clipsam segment`` (its --refine, --scales, --flip, --max-batch,
    --max-memory-mb, --batch-size and --no-progress apply to engines too)."""
    g = parser.add_argument_group("exported engines (ONNX Runtime, no torch)")
    g.add_argument("--engines", metavar="DIR", default=None,
                   help="run the engine folder written by 'clipsam export' instead of PyTorch (--refine uses its SAM2 "
                        "graphs)")
    g.add_argument("--providers", default="cpu",
                   help="ONNX Runtime providers in priority order: cpu, cuda, tensorrt (comma-separated; default: cpu, "
                        "or cuda,cpu with --device cuda)")
    g.add_argument("--allow-provider-fallback", action="store_true",
                   help="run on the remaining providers (with a warning) when a requested one cannot load")
    g.add_argument("--trt-cache", default=None, help="TensorRT engine cache folder (default: DIR/trt_cache)")


def _requested(args, name: str):
    value = getattr(args, name, None)
    return None if value == _CLI_DEFAULTS.get(name) else value


def check_engine_args(args) -> None:
    """Refuse PyTorch-only options given with --engines (they would be ignored silently)."""
    if getattr(args, "sam2_weights", None):
        raise ClipSamError("--sam2-weights does not apply with --engines: the SAM2 weights are in the engine folder")
    if getattr(args, "quick_gelu", None) is not None:
        raise ClipSamError("--quick-gelu / --no-quick-gelu do not apply with --engines: the activation is baked into "
                           "the exported graphs (give it to clipsam export)")


def engine_options(args) -> dict:
    """``EngineSegmenter`` keyword arguments (besides the folder) from ``clipsam segment/batch`` arguments.

    The folder's method, preset, precision and models are used; --method, --precision and --clip are checked
    against them when they differ from the CLI defaults, --preset and --refine SAM2 whenever given.
    """
    import dataclasses

    from ..cli import _parse_scales, prompt_options

    check_engine_args(args)
    overrides = prompt_options(args)  # templates, prompts; calibration is refused by the engines (check_request)
    scales = _parse_scales(getattr(args, "scales", None))
    if scales is not None:
        overrides["scales"] = scales
    if getattr(args, "flip", False):
        overrides["flip"] = True
    providers = args.providers
    kind, index = parse_device(getattr(args, "device", "cpu"), "--device")
    if providers == "cpu" and kind == "cuda":
        providers = "cuda,cpu"
    return dict(device_id=index or 0,
        providers=providers, allow_fallback=args.allow_provider_fallback,
        method=_requested(args, "method"), precision=_requested(args, "precision"), clip=_requested(args, "clip"),
        preset=args.preset if args.preset else dataclasses.MISSING, sam2=getattr(args, "refine", None),
        trt_cache_dir=args.trt_cache, max_batch=getattr(args, "max_batch", None),
        max_memory_mb=getattr(args, "max_memory_mb", None), **overrides)


def segment_with_engines(args) -> int:
    """``clipsam segment --engines DIR ...``: segment and save results like the PyTorch path (see ``engine_options``)."""
    from ..cli import expand_images
    from ..vocabulary import Vocabulary, parse_class_file
    from .segmenter import EngineSegmenter

    if args.classes and args.class_file:
        raise ClipSamError("give --classes or --class-file, not both")
    classes = Vocabulary.from_names(args.classes) if args.classes else None
    if args.class_file:
        classes = parse_class_file(args.class_file)
    images = expand_images(args.images)
    positive_int(getattr(args, "batch_size", 8), "--batch-size")
    output_dir(args.out, "--out")  # before the engines load
    seg = EngineSegmenter(args.engines, **engine_options(args))
    if classes is None and not seg.config.vocabulary:
        raise ClipSamError("name the classes: --classes \"cat, sofa\" or --class-file FILE (this engine folder has no "
                           "preset vocabulary)")
    from ..cli import segment_and_save

    out = Path(args.out)
    dt = segment_and_save(seg, images, classes, out, getattr(args, "batch_size", 8), not getattr(args, "no_progress", True))
    used = sorted({p for ps in seg.providers.values() for p in ps})
    print(f"segmented {len(images)} image(s) in {dt:.1f} s ({len(images) / max(dt, 1e-9):.2f} img/s) with ONNX "
          f"Runtime ({', '.join(used)}) -> {out}")
    return 0
