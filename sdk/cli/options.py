"""Option groups shared by the subcommands, and the builders that turn them into library objects.

Choices come from the library's registries (methods and datasets from ``clipsam.config``, SAM2 models from
``clipsam.refine``). Options that an engine folder also fixes (``--method``, ``--precision``, ``--clip``) default to
None, so that ``build_segmenter`` can check every option the user gave against the folder's manifest.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from typing import Any

from ..config import DATASETS, METHODS, MULTI_SCALE_5
from ..device import UPSTREAM_FP16
from ..errors import ClipSamError
from ..refine.config import SAM2_AUTOMASK_MODELS, SAM2_MODELS

DEFAULTS = {"clip": "ViT-B-16", "weights": "openai", "method": "resclip"}


def add_vocabulary_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("vocabulary (one of --classes / --class-file, or a --preset's own)")
    g.add_argument("--classes", help='comma-separated class names, e.g. "cat, sofa, floor"')
    g.add_argument("--class-file", help="class file: one class per line, synonyms separated by ', '")
    g.add_argument(
        "--preset",
        choices=DATASETS,
        help="dataset preset: its reference settings, and its vocabulary unless classes are given",
    )


def add_model_options(p: argparse.ArgumentParser) -> None:
    """CLIP model, method, device and precision; prompt engineering and calibration."""
    g = p.add_argument_group("model")
    g.add_argument("--clip", default=None, help="open_clip architecture name or model-config JSON (default: ViT-B-16)")
    w = g.add_mutually_exclusive_group()
    w.add_argument(
        "--weights",
        default=None,
        help="open_clip pretrained tag (downloaded when online) or local checkpoint file, OpenAI or "
        "open_clip format (default: openai)",
    )
    w.add_argument(
        "--random-weights",
        action="store_true",
        help="random CLIP weights: for offline smoke runs only, predictions are meaningless",
    )
    add_quick_gelu_option(g)
    g.add_argument(
        "--method", choices=tuple(METHODS), default=None, help="dense method (default: resclip = NACLIP+RCS+SFR)"
    )
    g.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    g.add_argument(
        "--no-text-cache",
        action="store_true",
        help="do not read or write the on-disk text-embedding cache (default location: $CLIPSAM_CACHE_DIR/text, "
        "$XDG_CACHE_HOME/clipsam/text or ~/.cache/clipsam/text; CLIPSAM_TEXT_CACHE=0 also turns it off)",
    )
    g.add_argument(
        "--precision",
        choices=("fp32", "fp16", "bf16", UPSTREAM_FP16),
        default=None,
        help="fp16/bf16 autocast needs CUDA; fp16-upstream (corrclip, rfclip; CPU or CUDA) reproduces the upstream "
        "code's fp16 casts (default: fp16-upstream for corrclip and rfclip on CUDA, where their upstream code runs "
        "in fp16; fp32 otherwise)",
    )
    g.add_argument(
        "--templates",
        default=None,
        metavar="NAME_OR_FILE",
        help="prompt templates: openai80 (default), openai7, single, or a file (.txt one per line, or a "
        "JSON/YAML list)",
    )
    g = p.add_argument_group("prompt engineering and calibration (README: 'Prompt engineering and calibration')")
    g.add_argument(
        "--context-prompts",
        metavar="FILE|default",
        default=None,
        help="per-class context prompts, averaged with the templates: 'default' (shipped) or a JSON/YAML "
        "file {class: [prompt, ...]}",
    )
    g.add_argument(
        "--descriptions",
        metavar="FILE|voc20|coco80",
        default=None,
        help="per-class descriptions for text enrichment: shipped 'voc20' / 'coco80' or a JSON/YAML file "
        "{class: [sentence, ...]}",
    )
    g.add_argument(
        "--enrichment",
        choices=("tse", "mean"),
        default=None,
        help="with --descriptions: ExCEL's TSE attribute bank (default) or plain averaging",
    )
    g.add_argument(
        "--disambiguate",
        metavar="FILE|default",
        default=None,
        help="rename ambiguous class names before encoding ('mouse' -> 'computer mouse'): 'default' or a JSON/YAML map",
    )
    g.add_argument(
        "--calibration",
        choices=("none", "excel", "knn"),
        default="none",
        help="visual calibration of the dense features: ExCEL's SVC (not with resclip methods) or kNN "
        "replacement of low-confidence patches (default: none)",
    )


def add_quick_gelu_option(g) -> None:
    """``--quick-gelu`` / ``--no-quick-gelu``: the activation the CLIP weights were trained with (default: detected)."""
    g.add_argument(
        "--quick-gelu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the weights were trained with QuickGELU (OpenAI's) or not (--no-quick-gelu: GELU); default: "
        "the tag's own setting, or detected from the checkpoint file (a warning when it does not tell)",
    )


def add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("exported engines (ONNX Runtime, no torch)")
    g.add_argument(
        "--engines",
        metavar="DIR",
        default=None,
        help="run the engine folder written by 'clipsam export' instead of PyTorch (--refine uses its SAM2 graphs)",
    )
    g.add_argument(
        "--providers",
        default=None,
        help="ONNX Runtime providers in priority order: cpu, cuda, tensorrt (comma-separated; default: cpu, "
        "or cuda,cpu with --device cuda)",
    )
    g.add_argument(
        "--allow-provider-fallback",
        action="store_true",
        help="run on the remaining providers (with a warning) when a requested one cannot load",
    )
    g.add_argument("--trt-cache", default=None, help="TensorRT engine cache folder (default: DIR/trt_cache)")


def add_corrclip_options(p: argparse.ArgumentParser, masks: bool = True) -> None:
    """CorrCLIP's flags (its DINO weights, where its region masks come from); ``masks``: also --masks DIR (your own
    masks per image; not for ``clipsam eval``, which segments the dataset's images by path)."""
    g = p.add_argument_group("CorrCLIP (--method corrclip)")
    g.add_argument(
        "--dino-weights",
        default=None,
        help="DINO ViT-B/8 checkpoint (dino_vitbase8_pretrain.pth; default: the official file, downloaded by name; "
        "random with --random-weights)",
    )
    g.add_argument(
        "--mask-source",
        choices=("sam2", "none"),
        default=None,
        help="region masks: SAM2 automatic masks (default) or none (one unsegmented region)",
    )
    g.add_argument(
        "--automask",
        metavar="SAM2",
        choices=SAM2_AUTOMASK_MODELS,
        default=None,
        help="SAM2 model of the automatic masks (upstream: sam2_hiera_l); default: the --refine model, shared",
    )
    if masks:
        g.add_argument(
            "--masks",
            metavar="DIR",
            default=None,
            help="your region masks instead of SAM2's: one file per image, same sub-folders and names as the images "
            "(<name>.npz with 'instance_mask', as CorrCLIP's pre-generated masks, <name>.npy: an (H, W) id map or "
            "(M, H, W) booleans, or <name>.png: an id map; 0 = unsegmented)",
        )


def add_segment_options(p: argparse.ArgumentParser) -> None:
    """Vocabulary, model, engines, SAM2 and scheduling: everything ``build_segmenter`` reads."""
    add_vocabulary_options(p)
    add_model_options(p)
    add_engine_options(p)
    g = p.add_argument_group("SAM2 refinement")
    g.add_argument(
        "--refine",
        metavar="SAM2",
        choices=SAM2_MODELS,
        help="refine the dense labels with SAM2 masks prompted from them (sam2.1_hiera_t|s|b+|l); also "
        "writes <name>_instances.json (COCO RLE)",
    )
    g.add_argument("--sam2-weights", help="SAM2 checkpoint file (default: the official one, downloaded by name)")
    add_corrclip_options(p)
    g = p.add_argument_group("scheduling")
    g.add_argument(
        "--scales",
        default=None,
        help="multi-scale ensemble: comma-separated factors, or 'ms5' for 0.5,0.75,1,1.25,1.5 (default: 1)",
    )
    g.add_argument("--flip", action="store_true", help="also average the horizontally flipped image")
    g.add_argument("--batch-size", type=int, default=8, help="images per scheduling chunk (default: 8)")
    g.add_argument(
        "--max-batch", type=int, default=None, help="most windows per encoder call (default: 4 on CPU, 32 on CUDA)"
    )
    g.add_argument("--max-memory-mb", type=float, default=None, help="working-memory budget in MiB")
    g.add_argument(
        "--decode-workers",
        type=int,
        default=None,
        help="threads that read and decode the next images while the current ones are segmented (default: 2 when "
        "the model runs on a GPU, 0 on the CPU)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def resolve_classes(args: argparse.Namespace):
    """The vocabulary named by --classes / --class-file (validated before any model loads), or None (preset's)."""
    from ..vocabulary import Vocabulary, parse_class_file

    if args.classes is not None and not args.classes.strip():
        raise ClipSamError(
            '--classes is empty (an unset shell variable?): name the classes, e.g. --classes "cat, sofa", or leave '
            "the flag out to use the preset's"
        )
    if args.classes and args.class_file:
        raise ClipSamError("give --classes or --class-file, not both")
    if not (args.classes or args.class_file or args.preset or getattr(args, "engines", None)):
        raise ClipSamError('name the classes: --classes "cat, sofa", --class-file FILE, or --preset voc21')
    if args.class_file:
        return parse_class_file(args.class_file)
    return Vocabulary.from_names(args.classes) if args.classes else None


def parse_scales(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    if text == "ms5":
        return MULTI_SCALE_5
    try:
        return tuple(float(s) for s in text.split(","))
    except ValueError:
        raise ClipSamError(f"--scales must be 'ms5' or comma-separated numbers, got {text!r}") from None


def prompt_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keywords of the prompt, calibration and ensemble flags: templates, prompts, calibration, scales, flip."""
    from ..prompt_files import load_templates
    from ..prompting import PromptConfig

    out: dict[str, Any] = {}
    t = getattr(args, "templates", None)
    if t is not None:
        out["templates"] = load_templates(t) if os.path.isfile(t) else t
    kw = {k: getattr(args, k, None) for k in ("context_prompts", "descriptions", "disambiguate")}
    enrichment = getattr(args, "enrichment", None)
    if enrichment is not None and kw["descriptions"] is None:
        raise ClipSamError("--enrichment needs --descriptions (voc20, coco80 or a file)")
    if any(v is not None for v in kw.values()):
        out["prompts"] = PromptConfig(enrichment=enrichment or "tse", **kw)  # type: ignore[arg-type]
    if getattr(args, "calibration", "none") != "none":
        out["calibration"] = args.calibration
    scales = parse_scales(getattr(args, "scales", None))
    if scales is not None:
        out["scales"] = scales
    if getattr(args, "flip", False):
        out["flip"] = True
    return out


def check_engine_options(args: argparse.Namespace) -> None:
    """Refuse PyTorch-only options given with --engines (they would be ignored silently)."""
    if getattr(args, "sam2_weights", None):
        raise ClipSamError("--sam2-weights does not apply with --engines: the SAM2 weights are in the engine folder")
    if getattr(args, "weights", None) or getattr(args, "random_weights", False):
        raise ClipSamError(
            "--weights / --random-weights do not apply with --engines: the CLIP weights are in the engine folder"
        )
    if getattr(args, "quick_gelu", None) is not None:
        raise ClipSamError(
            "--quick-gelu / --no-quick-gelu do not apply with --engines: the activation is baked into "
            "the exported graphs (give it to clipsam export)"
        )


def check_torch_options(args: argparse.Namespace) -> None:
    """Refuse ONNX Runtime options given without --engines (they would be ignored silently)."""
    given = [
        flag
        for flag, key in (
            ("--providers", "providers"),
            ("--allow-provider-fallback", "allow_provider_fallback"),
            ("--trt-cache", "trt_cache"),
        )
        if getattr(args, key, None)
    ]
    if given:
        raise ClipSamError(
            f"{' / '.join(given)} apply to exported engines only: add --engines DIR (a folder written by clipsam "
            "export), or drop them to run the PyTorch model (--device chooses where)"
        )


def corrclip_options(args: argparse.Namespace, refine: str | None, kwargs: dict[str, Any]) -> str | None:
    """CorrCLIP's keywords (DINO weights, mask source, ``refine=False`` when SAM2 serves only the automatic masks)
    added to ``kwargs``; returns the SAM2 model to build (one per segmenter), or ``refine``."""
    dino, source, automask = (getattr(args, k, None) for k in ("dino_weights", "mask_source", "automask"))
    mask_dir = getattr(args, "masks", None)
    if getattr(args, "method", None) != "corrclip":
        if dino or source or automask or mask_dir:
            raise ClipSamError("--dino-weights / --mask-source / --automask / --masks apply to --method corrclip only")
        return refine
    kwargs["dino_weights"] = None if args.random_weights and not dino else dino or "dino_vitb8"
    if mask_dir:
        if source or automask:
            raise ClipSamError(
                "--masks gives every image's region masks: --mask-source and --automask do not apply with it"
            )
        kwargs["corr_mask_source"] = "given"
        return refine
    if source == "none":
        if automask:
            raise ClipSamError("--automask makes SAM2 masks: it does not apply with --mask-source none")
        kwargs["corr_mask_source"] = "none"
        return refine
    if automask and refine and automask != refine:
        raise ClipSamError(
            f"one SAM2 model per segmenter: --automask {automask} and --refine {refine} differ; give one of them "
            "(the automatic masks use the --refine model)"
        )
    model = automask or refine
    if model is None:
        raise ClipSamError(
            "--method corrclip makes SAM2 automatic masks: give --automask sam2_hiera_l (upstream's model) or "
            "--refine MODEL (shared), or --mask-source none"
        )
    if not refine:
        kwargs["refine"] = False
    return model


def engine_method(args: argparse.Namespace) -> str | None:
    """The method a command runs: --method, else with --engines the engine folder's (its manifest, read now)."""
    if getattr(args, "method", None) or not getattr(args, "engines", None):
        return getattr(args, "method", None)
    from ..engine.manifest import load_manifest

    return load_manifest(args.engines).method


def check_masks_method(args: argparse.Namespace) -> None:
    """``--masks DIR`` only for CorrCLIP (--method, or the engine folder's method), checked before any model loads."""
    if getattr(args, "masks", None) and engine_method(args) != "corrclip":
        raise ClipSamError("--masks applies to --method corrclip only")


def engine_corrclip_options(args: argparse.Namespace, kwargs: dict[str, Any]) -> None:
    """CorrCLIP's options with --engines: the mask source (``--masks DIR``: given; ``--mask-source``) added to
    ``kwargs``; the DINO and SAM2 models are the folder's, so --dino-weights and --automask are refused."""
    source, mask_dir = getattr(args, "mask_source", None), getattr(args, "masks", None)
    given = [o for o, k in (("--dino-weights", "dino_weights"), ("--automask", "automask")) if getattr(args, k, None)]
    if given:
        raise ClipSamError(
            f"{' / '.join(given)} do not apply with --engines: the DINO and SAM2 models are in the engine folder "
            "(automatic masks: --mask-source sam2 on a folder exported with --sam2)"
        )
    if not (source or mask_dir):
        return
    if engine_method(args) != "corrclip":
        raise ClipSamError("--mask-source / --masks apply to --method corrclip only")
    if mask_dir and source:
        raise ClipSamError("--masks gives every image's region masks: --mask-source does not apply with it")
    kwargs["corr_mask_source"] = "given" if mask_dir else source


def build_segmenter(args: argparse.Namespace, preset: Any = dataclasses.MISSING):
    """The segmenter the options describe: engines (--engines) or PyTorch (``Segmenter.from_pretrained``).

    Arguments:
        args: parsed options of ``add_model_options`` (and any of ``add_segment_options``).
        preset: the preset to use (default: ``args.preset``).

    With --engines, every option the user gave that the engine folder fixes (method, precision, CLIP model, preset,
    SAM2 model) is checked against its manifest; options that cannot apply to engines are refused.
    """
    preset = getattr(args, "preset", None) if preset is dataclasses.MISSING else preset
    opt = {k: getattr(args, k, None) for k in ("refine", "sam2_weights", "max_batch", "max_memory_mb")}
    kwargs = prompt_options(args)
    kwargs["text_progress"] = not getattr(args, "no_progress", False)  # a bar while a large vocabulary is encoded
    if getattr(args, "no_text_cache", False):
        kwargs["text_disk_cache"] = False
    if getattr(args, "engines", None):
        from ..segmenter import Segmenter

        check_engine_options(args)
        engine_corrclip_options(args, kwargs)
        providers = getattr(args, "providers", None)
        return Segmenter.from_engines(
            args.engines,
            providers=providers.split(",") if providers else None,
            device=args.device,
            allow_fallback=getattr(args, "allow_provider_fallback", False),
            method=args.method,
            precision=args.precision,
            clip=args.clip,
            preset=preset if preset else dataclasses.MISSING,
            sam2=opt["refine"],
            trt_cache_dir=getattr(args, "trt_cache", None),
            max_batch=opt["max_batch"],
            max_memory_mb=opt["max_memory_mb"],
            **kwargs,
        )
    check_torch_options(args)
    sam2 = corrclip_options(args, opt["refine"], kwargs)
    if opt["sam2_weights"] and not sam2:
        raise ClipSamError("--sam2-weights needs --refine sam2.1_hiera_t (or another SAM2 model)")
    if sam2:
        kwargs.update(
            sam2=sam2,
            sam2_weights=opt["sam2_weights"],
            sam2_random_weights=bool(args.random_weights and not opt["sam2_weights"]),
        )
    from ..segmenter import Segmenter

    with warnings.catch_warnings():
        if args.random_weights:  # the user asked for it; say so once on stderr instead
            warnings.simplefilter("ignore")
            print(
                "clipsam: using RANDOM CLIP weights (--random-weights); predictions are meaningless.", file=sys.stderr
            )
        return Segmenter.from_pretrained(
            clip=args.clip or DEFAULTS["clip"],
            clip_weights=None if args.random_weights else args.weights or "openai",
            method=args.method or DEFAULTS["method"],
            preset=preset,
            device=args.device,
            precision=args.precision,  # None: the method's default on the device (Segmenter.from_pretrained)
            max_batch=opt["max_batch"],
            max_memory_mb=opt["max_memory_mb"],
            quick_gelu=getattr(args, "quick_gelu", None),
            **kwargs,
        )
