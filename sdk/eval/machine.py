"""What a measurement ran on: the machine and the library versions, recorded with every benchmark and evaluation.

``machine_info()`` names the CPU precisely enough to tell two boxes apart that report the same model name (cloud
CPUs often report only "AMD EPYC"): the family / model / stepping numbers, the widest vector instruction set, the
cache sizes and, when numba is already loaded, LLVM's name for the CPU (e.g. "znver3", "znver5"), which is what the
compiled host kernels were compiled for. The speed of those kernels depends on exactly these (see
``benchmarks/RESULTS.md``, where the same code ran 2-4x apart on two "AMD EPYC" boxes). Nothing here imports torch
or numba: each is read only when already loaded.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
_ISAS = ("avx512f", "avx2", "avx", "sse4_2", "asimd", "neon")  # widest first; the first flag present is reported


def versions() -> dict[str, str | None]:
    """Installed versions of clipsam and the libraries its results depend on (None when not installed)."""

    def ver(*dists: str) -> str | None:
        for d in dists:
            try:
                return metadata.version(d)
            except metadata.PackageNotFoundError:
                continue
        return None

    return {
        "clipsam": ver("clipsam"),
        "torch": ver("torch"),
        "open_clip": ver("open_clip_torch"),
        "onnxruntime": ver("onnxruntime", "onnxruntime-gpu"),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _cpuinfo(text: str) -> dict[str, Any]:
    """The first processor's model name, family / model / stepping and widest vector ISA from /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block only
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    out: dict[str, Any] = {}
    if fields.get("model name"):
        out["cpu"] = fields["model name"]
    ids = [fields.get(k) for k in ("cpu family", "model", "stepping")]
    if all(ids):
        out["cpu_id"] = "/".join(str(i) for i in ids)  # family/model/stepping, e.g. 25/1/1 (AMD Zen 3, Milan)
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    out["vector_isa"] = next((isa for isa in _ISAS if isa in flags), None)
    return out


def _caches(root: Path = _CACHES) -> dict[str, str]:
    """{"L1d": "32K", "L2": "512K", "L3": "32768K"}: the cache sizes seen by CPU 0 (empty where sysfs has none)."""
    out: dict[str, str] = {}
    try:
        for index in sorted(root.glob("index*")):
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            if kind == "Instruction":
                continue
            name = f"L{level}" + ("d" if kind == "Data" else "")
            out[name] = (index / "size").read_text().strip()
    except OSError:
        return out
    return out


def machine_info() -> dict[str, Any]:
    """CPU model (name, family/model/stepping, vector ISA, caches, LLVM's CPU name when numba is loaded), core count,
    platform and, when torch is loaded and sees CUDA, the GPU names."""
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine()}
    try:
        info.update(_cpuinfo(Path("/proc/cpuinfo").read_text()))
    except OSError:
        pass
    info.update(cores=os.cpu_count(), caches=_caches(), platform=platform.platform(), gpu=None)
    if "numba" in sys.modules:  # the compiled host kernels' target (never import numba just for this)
        try:
            import llvmlite.binding as llvm

            info["llvm_cpu"] = llvm.get_host_cpu_name()
        except Exception:  # pragma: no cover - llvmlite without the binding
            pass
    torch = sys.modules.get("torch")  # never import torch just for this (the ONNX path runs without it)
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info
