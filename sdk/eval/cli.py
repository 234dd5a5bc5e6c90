"""``clipsam eval`` and ``clipsam bench``: register them on the main parser, or run ``python -m clipsam.eval.cli``.

    clipsam eval --dataset voc21 --root data/VOCdevkit --out results.json [--method resclip --limit 100]
    clipsam bench [--suite pipeline --smoke --device cpu]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..cli import _PRESETS, _add_model_args, _make_segmenter, prompt_options
from ..errors import BackendUnavailableError, ClipSamError
from ..paths import output_file
from .datasets import DATASETS

__all__ = ["register", "cmd_eval", "cmd_bench", "engine_segmenter", "bench_table", "main"]


def register(subparsers) -> None:
    """Add the ``eval`` and ``bench`` commands to the subparsers of the ``clipsam`` parser."""
    ev = subparsers.add_parser(
        "eval", help="evaluate mIoU on a benchmark dataset",
        description="Segment a benchmark dataset with its own vocabulary and report dataset-level mIoU beside the "
                    "published numbers. Writes OUT (JSON) and OUT with suffix .md; an interrupted run resumes from "
                    "OUT's .partial.json.",
    )
    ev.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="benchmark dataset")
    ev.add_argument("--root", required=True, help="dataset root (or the folder holding VOCdevkit/, ADEChallengeData2016/...)")
    ev.add_argument("--split", default="val", help="split (default: val)")
    ev.add_argument("--preset", choices=_PRESETS, default=None, help="settings preset (default: the dataset's own)")
    ev.add_argument("--classes", default=None,
                    help="explicit class names, one per label index, comma-separated (default: the preset's vocabulary)")
    ev.add_argument("--limit", type=int, default=None, help="score only the first N images")
    ev.add_argument("--skip-bad", action="store_true", help="skip (and report) missing or unreadable images/labels")
    ev.add_argument("--no-resume", action="store_true", help="ignore partial results of an earlier run and start over")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("--out", default="results.json", help="JSON report (default: results.json); Markdown beside it")
    ev.add_argument("--engines", default=None, metavar="DIR", help="run exported ONNX engines from DIR instead of torch")
    _add_model_args(ev)
    ev.set_defaults(func=cmd_eval)

    be = subparsers.add_parser(
        "bench", help="run the benchmark suites and print a table",
        description="Run the pytest-benchmark suites of benchmarks/ (a source checkout) and print, per configuration, "
                    "the median latency, images/s, GFLOP per image and the fraction of the measured matmul peak.",
    )
    be.add_argument("--suite", action="append", default=None,
                    help="suite name: benchmarks/bench_<suite>.py (repeatable; 'all' for every suite; default: pipeline)")
    be.add_argument("--smoke", action="store_true", help="tiny model and images: checks the suites run, times nothing real")
    be.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto: the CPU, and CUDA when available (default)")
    be.add_argument("-k", dest="keyword", default=None, help="pytest -k expression selecting configurations")
    be.add_argument("--rounds", type=int, default=None, help="timed rounds per configuration")
    be.add_argument("--json", default=None, help="keep pytest-benchmark's JSON here")
    be.add_argument("--benchmarks-dir", default=None, help="folder of the suites (default: the checkout's benchmarks/)")
    be.set_defaults(func=cmd_bench)


# -- eval ------------------------------------------------------------------------------------------------
def engine_segmenter(engines, method: str, preset: str, device: str = "cpu", templates=None, **options):
    """The ONNX-engine segmenter (``clipsam.engine.segmenter.EngineSegmenter.from_engines``); never a fallback."""
    try:
        from clipsam.engine import segmenter as engine
    except ImportError as e:
        raise BackendUnavailableError(
            f"ONNX engines backend not available (cannot import clipsam.engine.segmenter: {e}). Run without --engines "
            "to evaluate the PyTorch pipeline."
        ) from e
    cls = getattr(engine, "EngineSegmenter", None)
    if cls is None or not hasattr(cls, "from_engines"):
        raise BackendUnavailableError(
            "ONNX engines backend not available: clipsam.engine.segmenter has no EngineSegmenter.from_engines(...)."
        )
    return cls.from_engines(engines, method=method, preset=preset, device=device, templates=templates, **options)


def _open(args):
    from .datasets import open_dataset

    # --skip-bad: list every sample, missing files included; the runner reports and skips them one by one.
    return open_dataset(args.dataset, args.root, args.split, check_files=not args.skip_bad)


def cmd_eval(args) -> int:
    from .runner import check_classes, evaluate, partial_path

    if args.limit is not None and args.limit < 1:
        raise ClipSamError(f"--limit must be >= 1, got {args.limit}")
    if args.engines:
        from ..engine.cli import check_engine_args

        check_engine_args(args)
    output_file(args.out, "--out")  # before the model loads
    dataset = _open(args)
    check_classes(dataset, args.classes)
    preset = args.preset or args.dataset
    seg = (engine_segmenter(args.engines, args.method, preset, args.device, **prompt_options(args)) if args.engines
           else _make_segmenter(args, preset))
    try:
        report = evaluate(seg, dataset, args.out, limit=args.limit, skip_bad=args.skip_bad,
                          progress=not args.no_progress, resume=not args.no_resume, classes=args.classes)
    except KeyboardInterrupt:
        print(f"clipsam eval: interrupted; partial results are in {partial_path(args.out)}. Run the same command "
              "again to continue.", file=sys.stderr)
        return 130
    s = report.summary
    print(f"{report.dataset} ({report.split}): mIoU {s['mIoU']:.2f}  mAcc {s['mAcc']:.2f}  aAcc {s['aAcc']:.2f}  "
          f"[{report.images} images, {len(report.skipped)} skipped, {report.timing['images_per_s']:.2f} img/s]")
    for row in report.published():
        if row["same_backbone"]:
            print(f"  published {row['backbone']} {row['mIoU']:.2f}  ({row['source']}{'; ' + row['setting'] if row['setting'] else ''})")
    print(f"reports: {report.json_path}  {report.md_path}")
    return 0


# -- bench -----------------------------------------------------------------------------------------------
def _benchmarks_dir(given) -> Path:
    for cand in ([Path(given)] if given else [Path(__file__).resolve().parents[2] / "benchmarks", Path.cwd() / "benchmarks"]):
        if (cand / "conftest.py").is_file():
            return cand
    raise ClipSamError("benchmarks/ not found: run from a clipsam source checkout or pass --benchmarks-dir")


def bench_table(data: dict) -> str:
    """The Markdown table of a pytest-benchmark JSON: config, median ms, img/s, GFLOP, % of measured peak."""
    lines = ["| config | median ms | img/s | GFLOP | GFLOP/s | % of peak |", "|---|---:|---:|---:|---:|---:|"]
    for b in data.get("benchmarks", []):
        info, stats = b.get("extra_info", {}), b.get("stats") or {}
        med = stats.get("median")
        gflop, peak = info.get("gflop"), info.get("peak_gflops")
        rate = gflop / med if gflop and med else None
        cells = [info.get("config") or b.get("name", "?"),
                 f"{med * 1e3:.1f}" if med else "-",
                 f"{1.0 / med:.3f}" if med else "-",
                 f"{gflop:.2f}" if gflop else "-",
                 f"{rate:.1f}" if rate else "-",
                 f"{100 * rate / peak:.1f}" if rate and peak else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    first = next(iter(data.get("benchmarks", [])), {}).get("extra_info", {})
    if first.get("machine"):
        m = first["machine"]
        lines += ["", f"machine: {m.get('cpu')} ({m.get('cores')} cores), GPU {m.get('gpu')}; "
                      f"measured matmul peak {first.get('peak_gflops') or float('nan'):.0f} GFLOP/s ({first.get('device')})"]
    return "\n".join(lines)


def cmd_bench(args) -> int:
    bdir = _benchmarks_dir(args.benchmarks_dir)
    files = []
    suites = args.suite or ["pipeline"]
    if "all" in suites:
        suites = sorted(p.stem[len("bench_"):] for p in bdir.glob("bench_*.py"))
    for suite in suites:
        f = bdir / f"bench_{suite}.py"
        if not f.is_file():
            known = sorted(p.stem[len("bench_"):] for p in bdir.glob("bench_*.py"))
            raise ClipSamError(f"no benchmark suite {suite!r} ({f}); known: {', '.join(known)}")
        files.append(str(f))
    if args.json:
        output_file(args.json, "--json")
    env = dict(os.environ, CLIPSAM_BENCH_DEVICE=args.device)
    if args.smoke:
        env["CLIPSAM_BENCH_SMOKE"] = "1"
    if args.rounds:
        env["CLIPSAM_BENCH_ROUNDS"] = str(args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.json) if args.json else Path(tmp) / "bench.json"
        out.unlink(missing_ok=True)  # never print the table of an earlier run
        cmd = [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider", "--benchmark-enable",
               f"--benchmark-json={out}"] + (["-k", args.keyword] if args.keyword else [])
        print("running:", " ".join(cmd), file=sys.stderr)
        rc = subprocess.call(cmd, cwd=bdir.parent, env=env)
        if not out.is_file():
            raise ClipSamError(f"the benchmark run wrote no results (pytest exit code {rc})")
        print(bench_table(json.loads(out.read_text())))
    return rc


def main(argv=None) -> int:
    """``python -m clipsam.eval.cli {eval,bench} ...``: the ``clipsam`` command line itself."""
    from ..cli import main as clipsam_main

    return clipsam_main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
