"""``clipsam export``: write a validated engine folder (needs torch and onnx; running the engines does not)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings

from ..config import DATASETS, METHODS
from ..errors import ClipSamError, Interrupted
from ..refine.config import SAM2_MODELS
from .options import add_quick_gelu_option


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export validated ONNX engines (CLIP text, dense encoder, SAM2) to a folder",
        description="Export the ONNX graphs of one CLIP model, method and preset (and optionally SAM2) into an engine "
        "folder, validate each against PyTorch (table printed), and write manifest.json and trtexec.sh. "
        "Run them with: clipsam segment --engines DIR (no torch needed).",
    )
    p.add_argument("--out", required=True, help="engine folder to create")
    g = p.add_argument_group("models")
    g.add_argument(
        "--clip", default="ViT-B-16", help="open_clip architecture name or model-config JSON (default: ViT-B-16)"
    )
    w = g.add_mutually_exclusive_group()
    w.add_argument("--weights", default="openai", help="open_clip pretrained tag or checkpoint file (default: openai)")
    w.add_argument("--random-weights", action="store_true", help="random CLIP weights (tests and smoke runs only)")
    add_quick_gelu_option(g)
    g.add_argument("--method", choices=tuple(METHODS), default="resclip", help="dense method (default: resclip)")
    g.add_argument(
        "--preset",
        default="voc21",
        choices=DATASETS + ("none",),
        help="dataset preset (settings and vocabulary); 'none' for open vocabulary (default: voc21)",
    )
    g.add_argument("--templates", default=None, help="prompt templates: openai80 (default), openai7 or single")
    g.add_argument(
        "--sam2",
        choices=SAM2_MODELS,
        default=None,
        help="also export this SAM2 model (refinement; CorrCLIP's automatic masks)",
    )
    s = g.add_mutually_exclusive_group()
    s.add_argument("--sam2-weights", default=None, help="SAM2 checkpoint file (default: download the official one)")
    s.add_argument("--sam2-random-weights", action="store_true", help="random SAM2 weights (tests only)")
    c = p.add_argument_group("corrclip (--method corrclip)")
    c.add_argument(
        "--dino-weights",
        default=None,
        help="DINO ViT-B/8 checkpoint (default: the official file, downloaded; random with --random-weights)",
    )
    c.add_argument(
        "--mask-source",
        choices=("sam2", "given", "none"),
        default=None,
        help="the folder's default mask source: sam2 (automatic masks; needs --sam2), given (masks per call, "
        "clipsam segment --masks DIR) or none (default: sam2)",
    )
    o = p.add_argument_group("graphs")
    o.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="graph precision; IO stays fp32")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default: 17)")
    o.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="windows per dense-encoder call (default: 8 when sliding, 2 for whole images)",
    )
    o.add_argument(
        "--max-side",
        type=int,
        default=1024,
        help="largest whole-image side in pixels the dense graphs serve (default: 1024)",
    )
    o.add_argument("--max-images", type=int, default=4, help="images per SAM2 encoder call (default: 4)")
    o.add_argument("--max-prompts", type=int, default=64, help="prompts per SAM2 decoder call (default: 64)")
    o.add_argument(
        "--max-queries",
        type=int,
        default=512,
        help="text queries (class names and synonyms) TensorRT's profiles serve (default: 512)",
    )
    o.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime vs PyTorch parity check")
    o.add_argument("--no-optimize", action="store_true", help="skip ONNX Runtime's offline graph optimisation")
    o.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing engine folder (only once the new engines are complete: a failed export keeps it)",
    )
    o.add_argument("--quiet", action="store_true", help="print only errors")
    p.set_defaults(func=cmd_export)
    return p


def cmd_export(args: argparse.Namespace) -> int:
    from ..export.engines import export_engines

    log = None if args.quiet else print
    with warnings.catch_warnings():
        if args.random_weights or args.sam2_random_weights:
            warnings.simplefilter("ignore")
            print(
                "clipsam: exporting RANDOM weights (--random-weights); the engines' predictions are meaningless.",
                file=sys.stderr,
            )
        overrides: dict = {"templates": args.templates} if args.templates else {}
        if args.method == "corrclip":
            overrides["dino_weights"] = args.dino_weights or (None if args.random_weights else "dino_vitb8")
            if args.mask_source:
                overrides["corr_mask_source"] = args.mask_source
        elif args.dino_weights or args.mask_source:
            raise ClipSamError("--dino-weights / --mask-source apply to --method corrclip only")
        t0 = time.perf_counter()
        with _interrupted_export(args.out):
            export_engines(
                args.out,
                clip=args.clip,
                clip_weights=None if args.random_weights else args.weights,
                method=args.method,
                preset=None if args.preset == "none" else args.preset,
                sam2=args.sam2,
                sam2_weights=args.sam2_weights,
                sam2_random_weights=args.sam2_random_weights,
                precision=args.precision,
                opset=args.opset,
                max_batch=args.max_batch,
                max_side=args.max_side,
                max_images=args.max_images,
                max_prompts=args.max_prompts,
                max_queries=args.max_queries,
                validate=not args.no_validate,
                optimize=not args.no_optimize,
                overwrite=args.overwrite,
                log=log,
                quick_gelu=args.quick_gelu,
                **overrides,
            )
    if log:
        log(f"clipsam export: done in {time.perf_counter() - t0:.0f} s")
    return 0


@contextlib.contextmanager
def _interrupted_export(out):
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(
            f"the engine folder {out} is incomplete (it has no manifest.json, so it will not be used). "
            "Run the same command again with --overwrite."
        ) from None
