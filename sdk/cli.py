"""Command line: ``clipsam segment`` (more subcommands register themselves in ``COMMANDS``)."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from . import __version__
from .errors import ClipSamError
from .preprocess import IMAGE_SUFFIXES

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
    g.add_argument("--templates", default=None, metavar="NAME_OR_FILE",
                   help="prompt templates: openai80 (default), openai7, single, or a file (.txt one per line, or a "
                        "JSON/YAML list)")
    _add_prompt_args(p)


def _add_prompt_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("prompt engineering and calibration (README: 'Prompt engineering and calibration')")
    g.add_argument("--context-prompts", metavar="FILE|default", default=None,
                   help="per-class context prompts, averaged with the templates: 'default' (shipped) or a JSON/YAML "
                        "file {class: [prompt, ...]}")
    g.add_argument("--descriptions", metavar="FILE|voc20|coco80", default=None,
                   help="per-class descriptions for text enrichment: shipped 'voc20' / 'coco80' or a JSON/YAML file "
                        "{class: [sentence, ...]}")
    g.add_argument("--enrichment", choices=("tse", "mean"), default=None,
                   help="with --descriptions: ExCEL's TSE attribute bank (default) or plain averaging")
    g.add_argument("--disambiguate", metavar="FILE|default", default=None,
                   help="rename ambiguous class names before encoding ('mouse' -> 'computer mouse'): 'default' or a "
                        "JSON/YAML map")
    g.add_argument("--calibration", choices=("none", "excel", "knn"), default="none",
                   help="visual calibration of the dense features: ExCEL's SVC (not with resclip methods) or kNN "
                        "replacement of low-confidence patches (default: none)")


def prompt_options(args) -> dict:
    """``from_pretrained`` keywords of the prompt and calibration flags: templates, prompts, calibration."""
    import os

    from .prompt_files import load_templates
    from .prompting import PromptConfig

    out: dict = {}
    t = getattr(args, "templates", None)
    if t is not None:
        out["templates"] = load_templates(t) if os.path.isfile(t) else t
    kw = {k: getattr(args, k, None) for k in ("context_prompts", "descriptions", "disambiguate")}
    enrichment = getattr(args, "enrichment", None)
    if enrichment is not None and kw["descriptions"] is None:
        raise ClipSamError("--enrichment needs --descriptions (voc20, coco80 or a file)")
    if any(v is not None for v in kw.values()):
        out["prompts"] = PromptConfig(enrichment=enrichment or "tse", **kw)
    if getattr(args, "calibration", "none") != "none":
        out["calibration"] = args.calibration
    return out


def add_segment_options(p: argparse.ArgumentParser) -> None:
    """Vocabulary, model, SAM2 and scheduling options shared by ``clipsam segment`` and ``clipsam batch``."""
    voc = p.add_argument_group("vocabulary (one of --classes / --class-file, or a --preset's own)")
    voc.add_argument("--classes", help='comma-separated class names, e.g. "cat, sofa, floor"')
    voc.add_argument("--class-file", help="class file: one class per line, synonyms separated by ', '")
    voc.add_argument("--preset", choices=_PRESETS,
                     help="dataset preset: its reference settings, and its vocabulary unless classes are given")
    _add_model_args(p)
    ref = p.add_argument_group("SAM2 refinement")
    ref.add_argument("--refine", metavar="SAM2", choices=("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"),
                     help="refine the dense labels with SAM2 masks prompted from them (sam2.1_hiera_t|s|b+|l); also "
                          "writes <name>_instances.json (COCO RLE)")
    ref.add_argument("--sam2-weights", help="SAM2 checkpoint file (default: the official one, downloaded by name)")
    run = p.add_argument_group("scheduling")
    run.add_argument("--scales", default=None,
                     help="multi-scale ensemble: comma-separated factors, or 'ms5' for 0.5,0.75,1,1.25,1.5 (default: 1)")
    run.add_argument("--flip", action="store_true", help="also average the horizontally flipped image")
    run.add_argument("--batch-size", type=int, default=8, help="images per scheduling chunk (default: 8)")
    run.add_argument("--max-batch", type=int, default=None, help="most windows per encoder call (default: 4 on CPU, 32 on CUDA)")
    run.add_argument("--max-memory-mb", type=float, default=None, help="working-memory budget in MiB")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


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
    seg.add_argument("images", nargs="+", metavar="IMAGE",
                     help="image files, folders (their images, sorted) or glob patterns such as 'photos/*.jpg'")
    seg.add_argument("--out", required=True, help="output folder")
    add_segment_options(seg)
    seg.set_defaults(func=cmd_segment)
    # here, not at the top: these modules import this one
    from .engine.cli import add_segment_arguments, register as register_engine
    from .eval.cli import register as register_eval

    add_segment_arguments(seg)  # --engines DIR, --providers, --allow-provider-fallback, --trt-cache
    from .batch import register as register_batch

    register_batch(sub)  # clipsam batch
    register_engine(sub)  # clipsam export
    register_eval(sub)  # clipsam eval, clipsam bench
    from .serve import command as serve_cmd  # clipsam serve (needs the serve extra only when run)

    serve_cmd.add_arguments(sub.add_parser("serve", help=serve_cmd.HELP)).set_defaults(func=serve_cmd.run)
    return parser




def expand_images(items: list[str]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths, in order, without duplicates."""
    import glob

    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ClipSamError(f"folder {item} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif p.is_file():
            found = [p]
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(f) for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if not found:
                raise ClipSamError(f"no file matches {item!r}")
        else:
            raise ClipSamError(f"image file not found: {item}")
        out.extend(f for f in found if f not in out)
    return out


def _parse_scales(text: str | None):
    from .config import MULTI_SCALE_5

    if text is None:
        return None
    if text == "ms5":
        return MULTI_SCALE_5
    try:
        return tuple(float(s) for s in text.split(","))
    except ValueError:
        raise ClipSamError(f"--scales must be 'ms5' or comma-separated numbers, got {text!r}") from None


def _make_segmenter(args, preset, **overrides):
    from .segmenter import Segmenter

    kwargs = dict(clip=args.clip, clip_weights=None if args.random_weights else args.weights, method=args.method,
                  preset=preset, device=args.device, precision=args.precision, **prompt_options(args), **overrides)
    with warnings.catch_warnings():
        if args.random_weights:  # the user asked for it; say so once on stderr instead
            warnings.simplefilter("ignore")
            print("clipsam: using RANDOM CLIP weights (--random-weights); predictions are meaningless.", file=sys.stderr)
        return Segmenter.from_pretrained(**kwargs)


def resolve_classes(args):
    """The vocabulary named by --classes / --class-file (validated before any model loads), or None (preset's)."""
    from .vocabulary import Vocabulary, parse_class_file

    if args.classes and args.class_file:
        raise ClipSamError("give --classes or --class-file, not both")
    if not (args.classes or args.class_file or args.preset or getattr(args, "engines", None)):
        raise ClipSamError("name the classes: --classes \"cat, sofa\", --class-file FILE, or --preset voc21")
    if args.class_file:
        return parse_class_file(args.class_file)
    return Vocabulary.from_names(args.classes) if args.classes else None


def build_segmenter(args):
    """The segmenter the options describe: engines (--engines) or PyTorch (``Segmenter.from_pretrained``)."""
    if getattr(args, "engines", None):
        from .engine.cli import engine_options
        from .engine.segmenter import EngineSegmenter

        return EngineSegmenter(args.engines, **engine_options(args))
    overrides = {}
    scales = _parse_scales(args.scales)
    if scales is not None:
        overrides["scales"] = scales
    if args.flip:
        overrides["flip"] = True
    if args.sam2_weights and not args.refine:
        raise ClipSamError("--sam2-weights needs --refine sam2.1_hiera_t (or another SAM2 model)")
    if args.refine:
        overrides.update(sam2=args.refine, sam2_weights=args.sam2_weights,
                         sam2_random_weights=bool(args.random_weights and not args.sam2_weights))
    return _make_segmenter(args, args.preset, max_batch=args.max_batch, max_memory_mb=args.max_memory_mb, **overrides)


def cmd_segment(args) -> int:
    if getattr(args, "engines", None):
        from .engine.cli import segment_with_engines

        return segment_with_engines(args)

    classes = resolve_classes(args)
    images = expand_images(args.images)
    seg = build_segmenter(args)
    dt = segment_and_save(seg, images, classes, Path(args.out), args.batch_size, not args.no_progress)
    print(f"segmented {len(images)} image(s) in {dt:.1f} s ({len(images) / max(dt, 1e-9):.2f} img/s) -> {args.out}")
    return 0


def segment_and_save(seg, images: list[Path], classes, out: Path, batch_size: int, progress: bool) -> float:
    """Segment ``images`` with any segmenter (PyTorch or engines), save each result under ``out``; seconds taken."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), unit="img", desc="segment")
    t0 = time.perf_counter()
    stems: dict[str, int] = {}
    try:
        results = seg.segment_stream((str(p) for p in images), classes=classes, batch_size=batch_size)
        for path, res in zip(images, results):
            stem = path.stem if path.stem not in stems else f"{path.stem}_{stems[path.stem]}"
            stems[path.stem] = stems.get(path.stem, 0) + 1
            res.info["image"] = str(path)
            paths = res.save(out, stem)
            top = ", ".join(f"{k} {100 * v:.1f}%" for k, v in list(res.pixel_fractions().items())[:5])
            line = f"{path}: [{top}] -> {paths['labels'].parent}/{stem}_*"
            if bar is not None:
                bar.write(line)
                bar.update(1)
            else:
                print(line)
    finally:
        if bar is not None:
            bar.close()
    return time.perf_counter() - t0


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
