"""``clipsam eval``: mIoU of a segmenter on a benchmark dataset, beside the published numbers.

clipsam eval --dataset voc21 --root data/VOCdevkit --out results.json [--method resclip --limit 100]
"""

from __future__ import annotations

import argparse
import sys

from ..config import DATASETS as PRESETS
from ..errors import ClipSamError
from ..eval.datasets import DATASETS
from .options import (
    add_corrclip_options,
    add_engine_options,
    add_model_options,
    build_segmenter,
    check_engine_options,
)


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``clipsam eval``."""
    ev = subparsers.add_parser(
        "eval",
        help="evaluate mIoU on a benchmark dataset",
        description="Segment a benchmark dataset with its own vocabulary and report dataset-level mIoU beside the "
        "published numbers. Writes OUT (JSON) and OUT with suffix .md; an interrupted run resumes from "
        "OUT's .partial.json.",
    )
    ev.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="benchmark dataset")
    ev.add_argument(
        "--root", required=True, help="dataset root (or the folder holding VOCdevkit/, ADEChallengeData2016/...)"
    )
    ev.add_argument("--split", default="val", help="split (default: val)")
    ev.add_argument("--preset", choices=PRESETS, default=None, help="settings preset (default: the dataset's own)")
    ev.add_argument(
        "--classes",
        default=None,
        help="explicit class names, one per label index, comma-separated (default: the preset's vocabulary)",
    )
    ev.add_argument("--limit", type=int, default=None, help="score only the first N images")
    ev.add_argument("--skip-bad", action="store_true", help="skip (and report) missing or unreadable images/labels")
    ev.add_argument("--no-resume", action="store_true", help="ignore partial results of an earlier run and start over")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("--out", default="results.json", help="JSON report (default: results.json); Markdown beside it")
    add_model_options(ev)
    add_engine_options(ev)
    add_corrclip_options(ev, masks=False)
    ev.set_defaults(func=cmd_eval)
    return ev


def _open(args):
    from ..eval.datasets import open_dataset

    # --skip-bad: list every sample, missing files included; the runner reports and skips them one by one.
    return open_dataset(args.dataset, args.root, args.split, check_files=not args.skip_bad)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..eval.runner import check_classes, evaluate, partial_path, report_path

    if args.limit is not None and args.limit < 1:
        raise ClipSamError(f"--limit must be >= 1, got {args.limit}")
    if args.engines:
        check_engine_options(args)
    report_path(args.out, "--out")  # before the model loads
    dataset = _open(args)
    check_classes(dataset, args.classes)
    preset = args.preset or args.dataset
    seg = build_segmenter(args, preset=preset)
    try:
        report = evaluate(
            seg,
            dataset,
            args.out,
            limit=args.limit,
            skip_bad=args.skip_bad,
            progress=not args.no_progress,
            resume=not args.no_resume,
            classes=args.classes,
        )
    except KeyboardInterrupt:
        print(
            f"clipsam eval: interrupted; partial results are in {partial_path(args.out)}. Run the same command "
            "again to continue.",
            file=sys.stderr,
        )
        return 130
    s = report.summary
    print(
        f"{report.dataset} ({report.split}): mIoU {s['mIoU']:.2f}  mAcc {s['mAcc']:.2f}  aAcc {s['aAcc']:.2f}  "
        f"[{report.images} images, {len(report.skipped)} skipped, {report.timing['images_per_s']:.2f} img/s]"
    )
    for row in report.published():
        if row["same_backbone"]:
            print(
                f"  published {row['backbone']} {row['mIoU']:.2f}  ({row['source']}{'; ' + row['setting'] if row['setting'] else ''})"
            )
    print(f"reports: {report.json_path}  {report.md_path}")
    return 0
