"""Shared benchmark fixtures: the device description every result carries, and a CUDA-aware timer.

Run with timing on (pyproject's addopts disable it for the test suite):

    pytest benchmarks/<file>.py --benchmark-enable [--benchmark-json out.json]
    pytest benchmarks --smoke --benchmark-disable      # every suite once, tiny sizes (CI); or CLIPSAM_BENCH_SMOKE=1

Files are named ``bench_*.py``; ``pytest benchmarks`` collects them through ``pytest_collect_file`` below.
"""

from __future__ import annotations

import os
import platform

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--smoke",
        action="store_true",
        default=False,
        help="clipsam benchmarks: tiny model and sizes, to check the suites run (same as CLIPSAM_BENCH_SMOKE=1)",
    )


def pytest_configure(config):
    if config.getoption("--smoke", default=False):
        os.environ["CLIPSAM_BENCH_SMOKE"] = "1"  # read by the suites at import (their parametrisation depends on it)


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` when a folder is given (a file named on the command line is collected anyway)."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def device_info() -> dict:
    """GPU name, capability and library versions, for ``benchmark.extra_info``."""
    import torch

    info = {"torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda}
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count)
    return info


@pytest.fixture(scope="session")
def sample_photo():
    """``sample_photo((H, W))`` -> the bundled photograph resized to H x W (INTER_AREA), RGB uint8, cached."""
    from functools import lru_cache
    from importlib import resources

    import cv2
    import numpy as np

    data = resources.files("clipsam.data").joinpath("chelsea.jpg").read_bytes()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    @lru_cache(maxsize=16)
    def resized(hw: tuple[int, int]) -> np.ndarray:
        rgb = np.ascontiguousarray(cv2.resize(bgr, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)[:, :, ::-1])
        rgb.setflags(write=False)  # shared between benchmarks
        return rgb

    return lambda hw: resized(tuple(int(v) for v in hw))


@pytest.fixture
def cuda_bench(benchmark):
    """``cuda_bench(fn, rounds=..., warmup_rounds=...)``: pedantic timing with a device sync inside the target."""
    import torch

    def run(fn, *, rounds: int = 20, iterations: int = 1, warmup_rounds: int = 3):
        def target():
            out = fn()
            torch.cuda.synchronize()
            return out

        return benchmark.pedantic(target, rounds=rounds, iterations=iterations, warmup_rounds=warmup_rounds)

    return run
