"""The ``clipsam`` package as the layout tools see it, and mypy on it started early (helpers of ``test_layout.py``).

``clipsam`` is assembled from three folders (``sdk/`` is ``clipsam``, ``kernels/`` is ``clipsam.kernels``,
``export/`` is ``clipsam.export``), which the tools cannot follow through the editable install; ``package_tree``
builds the package as one tree of symbolic links to put first on their path. mypy's cold run takes about a minute
of one core, so the session starts it once its test is selected (``conftest.pytest_collection_finish``),
at a lower priority, to run while other tests wait on subprocesses, and its test collects the result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MYPY_TEST = "test_layout.py::test_mypy_on_the_library"
MYPY_RUN = pytest.StashKey["Mypy"]()  # the session's background run, on ``config.stash``


def package_tree(base: Path) -> Path:
    """``base`` with a ``clipsam/`` folder of symbolic links into sdk/, kernels/ and export/; returns ``base``."""
    pkg = base / "clipsam"
    pkg.mkdir()
    for entry in (ROOT / "sdk").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    (pkg / "kernels").symlink_to(ROOT / "kernels")
    (pkg / "export").symlink_to(ROOT / "export")
    return base


def tool(name: str) -> str:
    """The path of a test tool installed beside this Python, or the test fails naming the set-up command."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in this environment; run bash .ci/setup.sh (it installs the test extra)")
    return str(path)


class Mypy:
    """mypy on the package tree under ``base``, running in the background from construction on."""

    def __init__(self, base: Path) -> None:
        self.base = base
        tree = package_tree(base)
        cmd = [str(BIN / "mypy"), "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tree / ".mypy")]
        nice = shutil.which("nice")
        self.out = open(base / "mypy.out", "w+")  # noqa: SIM115 - read and closed in result()
        self.proc = subprocess.Popen(
            ([nice, "-n", "10"] if nice else []) + cmd + ["-p", "clipsam"],
            cwd=tree,
            env={**os.environ, "MYPYPATH": str(tree)},
            stdout=self.out,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def result(self, timeout: float = 600) -> tuple[int, str]:
        """Wait for mypy: (exit code, its output)."""
        code = self.proc.wait(timeout=timeout)
        self.out.seek(0)
        return code, self.out.read()

    def close(self) -> None:
        """Stop mypy if it still runs, and remove its folder."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        shutil.rmtree(self.base, ignore_errors=True)
