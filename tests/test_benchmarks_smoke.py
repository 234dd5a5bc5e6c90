"""The benchmark suites run once in smoke mode (tiny test ViT and images, timing off), so they cannot rot.

GPU-only suites (bench_kernels) skip without CUDA; bench_pipeline exports its own engines for its ONNX Runtime case
and skips SAM2 refinement on the CPU in smoke mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_suites_smoke():
    env = dict(os.environ, CLIPSAM_BENCH_SMOKE="1", CLIPSAM_BENCH_DEVICE="auto")
    cmd = [sys.executable, "-m", "pytest", "benchmarks", "-q", "--benchmark-disable", "-p", "no:cacheprovider", "-rA"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    passed = int(out.split(" passed")[0].split()[-1])
    assert passed >= 10, out[-2000:]  # every CPU pipeline configuration: 8 single-scale, 1 multi-scale, 1 engine
    assert "PASSED benchmarks/bench_pipeline.py::test_pipeline[resclip-voc21-onnxruntime-40x56-cpu-fp32]" in out
