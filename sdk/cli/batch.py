"""``clipsam batch``: label every image of folders or globs; resumable; in-process or on a Ray cluster.

    clipsam batch photos/ --out labels/ --preset voc21                      # in this process
    clipsam batch 'photos/**/*.jpg' --out labels/ --classes "cat, dog" --ray --actors 2
    clipsam batch photos/ --out labels/ --engines engines/ --ray ray://head:10001 --actors 8 --gpus-per-actor 1

Outputs mirror the input tree, and a rerun finishes what an interrupted run left (``clipsam.batch.run_batch``).
"""

from __future__ import annotations

import argparse
from functools import partial

from ..batch import run_batch
from ..device import parse_device
from ..errors import ClipSamError
from ..prefetch import decode_workers
from .options import add_segment_options, build_segmenter, check_masks_method, resolve_classes


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "batch",
        help="label many images: resumable, bad images reported, in-process or on Ray",
        description="Label every image of folders (recursive), files and globs. Outputs mirror the input tree; each "
        "image's summary JSON is written last and atomically, so a rerun skips finished images. Bad "
        "images are reported (stderr and batch_report.json) and the run goes on; the exit code is 1 if "
        "any image failed. --ray runs the same code on Ray Data, one segmenter per actor.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folders (recursive), image files or glob patterns")
    p.add_argument("--out", required=True, help="output folder (mirrors the input tree)")
    p.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=False,
        metavar="ADDRESS",
        help="run on Ray Data: a local cluster, or the cluster at ADDRESS ('auto', 'ray://host:10001')",
    )
    p.add_argument("--actors", type=int, default=1, help="Ray actors, each with its own segmenter (default: 1)")
    p.add_argument(
        "--gpus-per-actor", type=float, default=None, help="GPUs per Ray actor (default: 1 with --device cuda, else 0)"
    )
    add_segment_options(p)
    p.set_defaults(func=cmd_batch)
    return p


def build_from_options(options: dict):
    """A segmenter from ``vars(args)`` of ``clipsam batch`` (a picklable entry point for Ray actors)."""
    return build_segmenter(argparse.Namespace(**options))


def cmd_batch(args: argparse.Namespace) -> int:
    classes = resolve_classes(args)
    if args.decode_workers is not None and args.ray is not False:
        raise ClipSamError("--decode-workers applies to in-process runs; on --ray, Ray Data reads ahead itself")
    if args.actors > 1 and args.ray is False:
        raise ClipSamError("--actors needs --ray (in-process runs use one segmenter)")
    check_masks_method(args)
    options = {k: v for k, v in vars(args).items() if k != "func"}
    on_gpu = parse_device(args.device, "--device")[0] == "cuda"  # a bad --device fails here, before any work
    decode_workers(args.decode_workers, on_gpu, "--decode-workers")  # and a bad --decode-workers
    gpus = args.gpus_per_actor if args.gpus_per_actor is not None else (1 if on_gpu else 0)
    report = run_batch(
        args.inputs,
        args.out,
        segmenter=partial(build_from_options, options),
        classes=classes,
        ray=args.ray,
        actors=args.actors,
        gpus_per_actor=gpus,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        mask_dir=args.masks,
        decode_workers=args.decode_workers,
    )
    rate = f" ({report['images_per_s']:.2f} img/s)" if report["images_per_s"] else ""
    print(
        f"clipsam batch: {report['done']} segmented{rate}, {report['skipped']} already done, {report['failed']} "
        f"failed, of {report['total']} -> {args.out} ({report['mode']})"
    )
    return 1 if report["failed"] else 0
