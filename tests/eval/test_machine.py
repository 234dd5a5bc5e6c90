"""``clipsam.eval.machine``: the CPU's identity (family/model/stepping, vector ISA, caches), read without torch or
numba, on synthetic /proc/cpuinfo text and a synthetic sysfs cache tree, and on this machine."""

from __future__ import annotations

import json
import subprocess
import sys

from clipsam.eval.machine import _caches, _cpuinfo, machine_info, versions

_X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: {family}
model\t\t: {model}
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse4_2 avx fma {flags}

processor\t: 1
model name\t: another CPU that must not be read
flags\t\t: avx512f
"""


def test_cpuinfo_reads_the_first_processor_and_its_widest_vector_isa():
    zen3 = _cpuinfo(_X86.format(family=25, model=1, flags="avx2"))
    assert zen3 == {"cpu": "AMD EPYC", "cpu_id": "25/1/1", "vector_isa": "avx2"}
    zen5 = _cpuinfo(_X86.format(family=26, model=2, flags="avx2 avx512f avx512bw"))
    assert zen5["cpu_id"] == "26/2/1" and zen5["vector_isa"] == "avx512f"
    arm = _cpuinfo("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm\nCPU part\t: 0xd0c\n")
    assert arm == {"vector_isa": "asimd"}  # no model name or family numbers on this kernel: none invented
    assert _cpuinfo("") == {"vector_isa": None}


def test_caches_from_a_sysfs_tree(tmp_path):
    for i, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "1024K")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    assert _caches(tmp_path) == {"L1d": "48K", "L2": "1024K"}
    assert _caches(tmp_path / "missing") == {}


def test_machine_info_here_is_json_and_loads_neither_torch_nor_numba():
    code = (
        "import json, sys; from clipsam.eval.machine import machine_info; m = machine_info(); "
        "print(json.dumps([m, 'torch' in sys.modules, 'numba' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    info, torch_loaded, numba_loaded = json.loads(out.stdout)
    assert not torch_loaded and not numba_loaded and "llvm_cpu" not in info
    assert {"cpu", "cores", "caches", "platform", "gpu", "vector_isa"} <= set(info) and info["cores"] >= 1


def test_machine_info_names_the_compiled_kernels_target_when_numba_is_loaded():
    import numba  # noqa: F401 - loaded, as it is after the compiled host kernels ran

    info = machine_info()
    assert isinstance(info.get("llvm_cpu"), str) and info["llvm_cpu"]
    assert json.loads(json.dumps(info)) == info
    assert versions()["numpy"] and versions()["python"]
