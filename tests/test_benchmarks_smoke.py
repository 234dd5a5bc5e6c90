"""The benchmark suites run once in smoke mode (tiny test ViT and images, timing off), so they cannot rot.

GPU-only suites (bench_kernels) skip without CUDA; the ONNX Runtime and SAM2 hooks of bench_pipeline skip with
their reasons until those integrations are available.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_suites_smoke():
    env = dict(os.environ, CLIPSAM_BENCH_SMOKE="1", CLIPSAM_BENCH_DEVICE="auto")
    cmd = [sys.executable, "-m", "pytest", "benchmarks", "-q", "--benchmark-disable", "-p", "no:cacheprovider", "-rs"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    passed = int(out.split(" passed")[0].split()[-1])
    assert passed >= 9, out[-2000:]  # every CPU pipeline configuration: 8 single-scale + 1 multi-scale
    assert "ONNX Runtime backend" in out  # the onnxruntime hook says why it skipped
