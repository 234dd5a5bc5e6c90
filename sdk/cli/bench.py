"""``clipsam bench``: run the pytest-benchmark suites of ``benchmarks/`` and print a table.

clipsam bench [--suite pipeline --smoke --device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import ClipSamError
from ..paths import output_file


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``clipsam bench``."""
    be = subparsers.add_parser(
        "bench",
        help="run the benchmark suites and print a table",
        description="Run the pytest-benchmark suites of benchmarks/ (a source checkout) and print, per configuration, "
        "s/image, images/s, GFLOP per image and the fraction of the matmul peak measured in the same run "
        "(suite 'vocabulary': also the scaling table over 21, 60, 150 and 500 queries).",
    )
    be.add_argument(
        "--suite",
        action="append",
        default=None,
        help="suite name: benchmarks/bench_<suite>.py (repeatable; 'all' for every suite; default: pipeline and vocabulary)",
    )
    be.add_argument(
        "--smoke", action="store_true", help="tiny model and images: checks the suites run, times nothing real"
    )
    be.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: the CPU, and CUDA when available (default)",
    )
    be.add_argument("-k", dest="keyword", default=None, help="pytest -k expression selecting configurations")
    be.add_argument("--rounds", type=int, default=None, help="timed rounds per configuration")
    be.add_argument("--json", default=None, help="keep pytest-benchmark's JSON here")
    be.add_argument("--benchmarks-dir", default=None, help="folder of the suites (default: the checkout's benchmarks/)")
    be.set_defaults(func=cmd_bench)
    return be


def _benchmarks_dir(given) -> Path:
    for cand in (
        [Path(given)] if given else [Path(__file__).resolve().parents[2] / "benchmarks", Path.cwd() / "benchmarks"]
    ):
        if (cand / "conftest.py").is_file():
            return cand
    raise ClipSamError("benchmarks/ not found: run from a clipsam source checkout or pass --benchmarks-dir")


def bench_table(data: dict) -> str:
    """Markdown tables of a pytest-benchmark JSON: per configuration s/image, images/s, GFLOP and % of the
    measured matmul peak; then, for suites that vary the vocabulary, s/image per query count."""
    lines = [
        "| config | s / image | images / s | GFLOP | GFLOP/s | % of peak |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    benches: list[dict] = data.get("benchmarks", [])
    for b in benches:
        info, stats = b.get("extra_info", {}), b.get("stats") or {}
        med = stats.get("median")
        gflop, peak = info.get("gflop"), info.get("peak_gflops")
        rate = gflop / med if gflop and med else None
        cells = [
            info.get("config") or b.get("name", "?"),
            f"{med:.3f}" if med else "-",
            f"{1.0 / med:.2f}" if med else "-",
            f"{gflop:.2f}" if gflop else "-",
            f"{rate:.1f}" if rate else "-",
            f"{100 * rate / peak:.1f}" if rate and peak else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += scaling_table(benches)
    lines += ratio_lines(benches)
    first = benches[0].get("extra_info", {}) if benches else {}
    if first.get("machine"):
        m = first["machine"]
        lines += [
            "",
            f"machine: {cpu_line(m)} ({m.get('cores')} cores), GPU {m.get('gpu')}; "
            f"measured matmul peak {first.get('peak_gflops') or float('nan'):.0f} GFLOP/s ({first.get('device')})",
        ]
    return "\n".join(lines)


def cpu_line(m: dict) -> str:
    """ "AMD EPYC (25/1/1, llvm znver3, avx2, L2 512K, L3 32768K)": the CPU as ``clipsam.eval.machine.machine_info``
    recorded it, with what tells apart two boxes of the same model name."""
    caches = m.get("caches") or {}
    details = [m.get("cpu_id"), f"llvm {m['llvm_cpu']}" if m.get("llvm_cpu") else None, m.get("vector_isa")]
    details += [f"{k} {caches[k]}" for k in ("L2", "L3") if caches.get(k)]
    shown = [d for d in details if d]
    return f"{m.get('cpu')} ({', '.join(shown)})" if shown else str(m.get("cpu"))


def scaling_table(benches: list[dict]) -> list[str]:
    """Lines of the vocabulary-scaling table (s / image per query count, and the ratio to the fewest queries)
    for the results that record ``queries`` and ``cpu_ops`` (benchmarks/bench_vocabulary.py); none otherwise."""
    rows: dict[tuple, dict[int, float]] = {}
    pages: dict[tuple, dict[int, float]] = {}
    for b in benches:
        info, med = b.get("extra_info", {}), (b.get("stats") or {}).get("median")
        if med and "cpu_ops" in info and "queries" in info:
            key = (info.get("method"), info.get("layout", "whole"), info["cpu_ops"])
            rows.setdefault(key, {})[int(info["queries"])] = med
            if info.get("minor_faults_per_image") is not None:
                pages.setdefault(key, {})[int(info["queries"])] = info["minor_faults_per_image"] * 4 / 1024
    if not rows:
        return []
    sizes = sorted({q for r in rows.values() for q in r})
    out = [
        "",
        "vocabulary scaling: s / image (x the time with " + str(sizes[0]) + " queries)",
        "",
        "| method | layout | cpu_ops | " + " | ".join(f"{q} queries" for q in sizes) + " |",
        "|---|---|---|" + "---:|" * len(sizes),
    ]
    for (method, layout, ops), times in sorted(rows.items()):
        base = times.get(sizes[0])
        cells = [f"{times[q]:.3f} ({times[q] / base:.2f}x)" if q in times and base else "-" for q in sizes]
        out.append(f"| {method} | {layout} | {ops} | " + " | ".join(cells) + " |")
    if pages:
        out += ["", "fresh pages touched per image (MiB; minor page faults x 4 KiB)", ""]
        out += [
            "| method | layout | cpu_ops | " + " | ".join(f"{q} queries" for q in sizes) + " |",
            "|---|---|---|" + "---:|" * len(sizes),
        ]
        for (method, layout, ops), mib in sorted(pages.items()):
            cells = [f"{mib[q]:.0f}" if q in mib else "-" for q in sizes]
            out.append(f"| {method} | {layout} | {ops} | " + " | ".join(cells) + " |")
    return out


def ratio_lines(benches: list[dict]) -> list[str]:
    """Lines for the results that time ResCLIP and SCLIP alternately (``resclip_over_sclip`` in their extra info,
    benchmarks/bench_vocabulary.py): each method's median and the ratio; none otherwise."""
    out = []
    for b in benches:
        info = b.get("extra_info", {})
        if "resclip_over_sclip" in info:
            rr = info.get("round_ratios") or []
            spread = f", rounds {min(rr):.2f}x-{max(rr):.2f}x" if rr else ""
            out.append(
                f"- {info.get('queries')} queries, {info.get('layout')}: ResCLIP {info['resclip_median_s']:.3f} s, "
                f"SCLIP {info['sclip_median_s']:.3f} s: {info['resclip_over_sclip']:.2f}x{spread}"
            )
    return ["", "ResCLIP / SCLIP, called alternately (median s / image)", "", *out] if out else []


def cmd_bench(args: argparse.Namespace) -> int:
    from ..config import positive_int

    if args.rounds is not None:
        positive_int(args.rounds, "--rounds")  # before any suite starts
    bdir = _benchmarks_dir(args.benchmarks_dir)
    files = []
    suites = args.suite or ["pipeline", "vocabulary"]
    if "all" in suites:
        suites = sorted(p.stem[len("bench_") :] for p in bdir.glob("bench_*.py"))
    for suite in suites:
        f = bdir / f"bench_{suite}.py"
        if not f.is_file():
            known = sorted(p.stem[len("bench_") :] for p in bdir.glob("bench_*.py"))
            raise ClipSamError(f"no benchmark suite {suite!r} ({f}); known: {', '.join(known)}")
        files.append(str(f))
    if args.json:
        output_file(args.json, "--json")
    # The run is a pytest session of its own: variables that say "this process is a pytest-xdist worker" (set when
    # bench runs inside one) would make pytest-benchmark disable itself and write no results.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    env["CLIPSAM_BENCH_DEVICE"] = args.device
    if args.smoke:
        env["CLIPSAM_BENCH_SMOKE"] = "1"
    if args.rounds is not None:
        env["CLIPSAM_BENCH_ROUNDS"] = str(args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.json) if args.json else Path(tmp) / "bench.json"
        out.unlink(missing_ok=True)  # never print the table of an earlier run
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            *files,
            "-q",
            "-p",
            "no:cacheprovider",
            "--benchmark-enable",
            f"--benchmark-json={out}",
        ] + (["-k", args.keyword] if args.keyword else [])
        print("running:", " ".join(cmd), file=sys.stderr)
        rc = subprocess.call(cmd, cwd=bdir.parent, env=env)
        if not out.is_file():
            raise ClipSamError(f"the benchmark run wrote no results (pytest exit code {rc})")
        print(bench_table(json.loads(out.read_text())))
    return rc
