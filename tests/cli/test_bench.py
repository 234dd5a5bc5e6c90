"""``clipsam bench`` (run as ``python -m clipsam.cli``) in a subprocess, and its table."""

from __future__ import annotations

import subprocess
import sys

from clipsam.cli.bench import bench_table


def run(*args, check=True, cwd=None):
    proc = subprocess.run(
        [sys.executable, "-m", "clipsam.cli", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def test_bench_runs_a_suite_and_prints_the_table(tmp_path):
    bdir = tmp_path / "benchmarks"
    bdir.mkdir()
    (bdir / "conftest.py").write_text("")
    (bdir / "bench_toy.py").write_text(
        "def test_toy(benchmark):\n"
        "    benchmark.pedantic(lambda: sum(range(1000)), rounds=2, iterations=1)\n"
        "    benchmark.extra_info.update(config='toy', gflop=0.002, peak_gflops=1.0)\n"
    )
    keep = tmp_path / "b.json"
    p = run("bench", "--benchmarks-dir", str(bdir), "--suite", "toy", "--json", str(keep))
    assert "| toy |" in p.stdout and keep.is_file()
    p = run("bench", "--benchmarks-dir", str(bdir), "--suite", "nope", check=False)
    assert p.returncode == 2 and "known: toy" in p.stderr


def test_bench_table():
    data = {
        "benchmarks": [
            {
                "name": "a",
                "stats": {"median": 0.5},
                "extra_info": {"config": "cfg-a", "gflop": 10.0, "peak_gflops": 100.0},
            },
            {"name": "b", "stats": {"median": 0.002}, "extra_info": {}},
        ]
    }
    lines = bench_table(data).splitlines()
    assert lines[2] == "| cfg-a | 500.0 | 2.000 | 10.00 | 20.0 | 20.0 |"
    assert lines[3] == "| b | 2.0 | 500.000 | - | - | - |"
