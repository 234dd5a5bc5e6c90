"""``clipsam bench`` (run as ``python -m clipsam.cli``) in a subprocess, and its table."""

from __future__ import annotations

import os
import subprocess
import sys

from clipsam.cli.bench import bench_table


def run(*args, check=True, cwd=None, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "clipsam.cli", *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env
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
    # run from inside a pytest-xdist worker: its variables, passed on, made pytest-benchmark write nothing
    xdist = dict(os.environ, PYTEST_XDIST_WORKER="gw1", PYTEST_XDIST_WORKER_COUNT="2")
    p = run("bench", "--benchmarks-dir", str(bdir), "--suite", "toy", "--json", str(keep), env=xdist)
    assert "| toy |" in p.stdout and keep.is_file()
    p = run("bench", "--benchmarks-dir", str(bdir), "--suite", "nope", check=False)
    assert p.returncode == 2 and "known: toy" in p.stderr
    for bad in ("0", "-5"):  # 0 meant "the default" and -5 went to the suites as it was
        p = run("bench", "--benchmarks-dir", str(bdir), "--suite", "toy", "--rounds", bad, check=False)
        assert p.returncode == 2 and f"--rounds must be a positive integer, got {bad}" in p.stderr


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
    assert lines[0].startswith("| config | s / image | images / s |")
    assert lines[2] == "| cfg-a | 0.500 | 2.00 | 10.00 | 20.0 | 20.0 |"
    assert lines[3] == "| b | 0.002 | 500.00 | - | - | - |"
    assert "vocabulary scaling" not in bench_table(data)


def test_vocabulary_scaling_table():
    def bench(method, ops, q, med, layout=None):
        info = {"method": method, "cpu_ops": ops, "queries": q} | ({} if layout is None else {"layout": layout})
        return {"stats": {"median": med}, "extra_info": info}

    data = {
        "benchmarks": [
            bench("resclip", "compiled", 21, 1.0),
            bench("resclip", "compiled", 150, 1.4),
            bench("resclip", "torch", 21, 2.0),
            bench("resclip", "torch", 150, 8.0),
            bench("resclip", "compiled", 21, 3.0, "sliding"),
            bench("resclip", "compiled", 150, 3.3, "sliding"),
            bench("sclip", "compiled", 150, 0.9),
        ]
    }
    lines = bench_table(data).splitlines()
    i = lines.index("| method | layout | cpu_ops | 21 queries | 150 queries |")
    assert lines[i + 2] == "| resclip | sliding | compiled | 3.000 (1.00x) | 3.300 (1.10x) |"
    assert lines[i + 3] == "| resclip | whole | compiled | 1.000 (1.00x) | 1.400 (1.40x) |"  # no layout: whole
    assert lines[i + 4] == "| resclip | whole | torch | 2.000 (1.00x) | 8.000 (4.00x) |"
    assert lines[i + 5] == "| sclip | whole | compiled | - | - |"  # no 21-query time: no ratio
    assert "fresh pages" not in bench_table(data)
    data["benchmarks"][0]["extra_info"]["minor_faults_per_image"] = 2560
    data["benchmarks"][1]["extra_info"]["minor_faults_per_image"] = 25600
    lines = bench_table(data).splitlines()
    i = lines.index("fresh pages touched per image (MiB; minor page faults x 4 KiB)")
    assert lines[i + 4] == "| resclip | whole | compiled | 10 | 100 |"


def test_alternating_ratio_lines():
    info = {"queries": 500, "layout": "sliding", "resclip_median_s": 2.0, "sclip_median_s": 1.6}
    data = {
        "benchmarks": [
            {"name": "r", "stats": {"median": 3.6}, "extra_info": info | {"resclip_over_sclip": 1.25}},
            {"name": "s", "stats": {"median": 1.0}, "extra_info": {"config": "other"}},
        ]
    }
    lines = bench_table(data).splitlines()
    i = lines.index("ResCLIP / SCLIP, called alternately (median s / image)")
    assert lines[i + 2] == "- 500 queries, sliding: ResCLIP 2.000 s, SCLIP 1.600 s: 1.25x"
    data["benchmarks"][0]["extra_info"]["round_ratios"] = [1.2, 1.3]
    assert "1.25x, rounds 1.20x-1.30x" in bench_table(data)
    assert "called alternately" not in bench_table({"benchmarks": data["benchmarks"][1:]})


def test_machine_line_tells_boxes_of_one_model_name_apart():
    def table(machine):
        extra = {"config": "c", "machine": machine, "peak_gflops": 200.0, "device": "cpu"}
        return bench_table({"benchmarks": [{"name": "a", "stats": {"median": 1.0}, "extra_info": extra}]})

    zen3 = {"cpu": "AMD EPYC", "cpu_id": "25/1/1", "llvm_cpu": "znver3", "vector_isa": "avx2", "cores": 2}
    zen3["caches"] = {"L1d": "32K", "L2": "512K", "L3": "32768K"}
    assert "machine: AMD EPYC (25/1/1, llvm znver3, avx2, L2 512K, L3 32768K) (2 cores)" in table(zen3)
    zen5 = dict(zen3, cpu_id="26/2/0", llvm_cpu="znver5", vector_isa="avx512f", caches={"L2": "1024K"})
    assert "AMD EPYC (26/2/0, llvm znver5, avx512f, L2 1024K) (2 cores)" in table(zen5)
    assert "machine: AMD EPYC (2 cores)" in table({"cpu": "AMD EPYC", "cores": 2})  # an older record: the name only
