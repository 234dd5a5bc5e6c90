"""Shared benchmark fixtures: the device description every result carries, and a CUDA-aware timer.

Run with timing on (pyproject's addopts disable it for the test suite):

    pytest benchmarks/<file>.py --benchmark-enable [--benchmark-json out.json]
"""

from __future__ import annotations

import platform

import pytest


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
