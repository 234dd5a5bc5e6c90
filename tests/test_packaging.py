"""One import root: clipsam, clipsam.kernels, clipsam.export; no torch at `import clipsam`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"sdk": "clipsam", "kernels": "clipsam.kernels", "export": "clipsam.export"}


def test_every_source_package_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    assert cfg["package-dir"] == {"clipsam": "sdk", "clipsam.kernels": "kernels", "clipsam.export": "export"}
    found = set()
    for top, name in MAPPING.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name,) + rel))
    assert found == listed, f"add to pyproject packages: {found - listed}; remove: {listed - found}"


def test_no_top_level_sdk_kernels_export_modules():
    code = "import importlib.util as u; print([n for n in ('sdk', 'kernels', 'export') if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True).stdout
    assert out.strip() == "[]"


def test_import_clipsam_does_not_import_torch():
    code = "import sys, clipsam, clipsam.errors, clipsam.eval, clipsam.refine, clipsam.serve; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True).stdout
    assert out.strip() == "False"


def test_public_api():
    import clipsam

    assert set(clipsam.__all__) >= {"Segmenter", "SegmentationResult", "ClipSamError"}
    for name in clipsam.__all__:
        assert getattr(clipsam, name) is not None
