"""Checks that keep the layout readable: lint and format (ruff), types (mypy), the import layers (import-linter), no
import cycles, and no module importing another module's private name.

``clipsam`` is assembled from three folders (``sdk/`` is ``clipsam``, ``kernels/`` is ``clipsam.kernels``,
``export/`` is ``clipsam.export``), which the tools cannot follow through the editable install; ``layout_tree.package_tree``
builds the package as one tree of symbolic links to put first on their path (mypy's run starts early: see there).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .layout_tree import BIN, MYPY_RUN, ROOT, Mypy, package_tree, tool

SOURCES = ("sdk", "kernels", "export", "tests", "benchmarks")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A folder holding ``clipsam/`` as one package tree (symbolic links into sdk/, kernels/, export/)."""
    return package_tree(tmp_path_factory.mktemp("layout"))


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def test_ruff_lint_and_format():
    lint = _run([tool("ruff"), "check", *SOURCES], cwd=ROOT)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run([tool("ruff"), "format", "--check", *SOURCES], cwd=ROOT)
    assert fmt.returncode == 0, "run `ruff format` on:\n" + fmt.stdout + fmt.stderr


def test_mypy_on_the_library(request, tmp_path):
    mypy = request.config.stash.get(MYPY_RUN, None)  # started once the session selected this test
    if mypy is None:  # not started (no mypy: ``tool`` fails naming the set-up command)
        tool("mypy")
        mypy = Mypy(tmp_path)
        request.addfinalizer(mypy.close)
    code, out = mypy.result()
    assert code == 0, out[-6000:]


def test_import_contracts(tree):
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = _run([tool("lint-imports"), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree, env=env)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr


def _graph(tree: Path):
    code = (
        "import grimp, json, sys; g = grimp.build_graph('clipsam', cache_dir=None); "
        "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))"
    )
    out = _run([sys.executable, "-c", code], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})
    assert out.returncode == 0, out.stderr
    import json

    edges = json.loads(out.stdout)
    return {m: [t for t in ts if t.startswith("clipsam")] for m, ts in edges.items()}


def _cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges.get(root, ())))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif nxt not in index:
                index[nxt] = low[nxt] = counter[0]
                counter[0] += 1
                stack.append(nxt)
                on.add(nxt)
                work.append((nxt, iter(edges.get(nxt, ()))))
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
    return out


def test_no_import_cycles(tree):
    """Imports inside functions count too: a lazy import that closes a cycle is still a cycle."""
    edges = _graph(tree)
    assert len(edges) > 80  # the whole package was seen
    assert _cycles(edges) == []
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]  # the check can fail


def _module_name(path: Path) -> str:
    for folder, name in (("sdk", "clipsam"), ("kernels", "clipsam.kernels"), ("export", "clipsam.export")):
        if path.is_relative_to(ROOT / folder):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            return ".".join((name, *rel)).removesuffix(".__init__")
    raise AssertionError(path)


def test_no_module_imports_another_modules_private_name():
    offences, seen = [], 0
    for folder in ("sdk", "kernels", "export"):
        for path in (ROOT / folder).rglob("*.py"):
            me = _module_name(path)
            package = me if path.name == "__init__.py" else me.rpartition(".")[0]
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    source = node.module or ""
                    if node.level:
                        source = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [source])
                    for alias in node.names:
                        seen += source.startswith("clipsam")
                        private = alias.name.startswith("_") and not alias.name.startswith("__")
                        if private and source.startswith("clipsam") and source != me:
                            offences.append(f"{me}: from {source.rstrip('.')} import {alias.name}")
    assert seen > 300  # the walk resolved the package's own imports
    assert offences == []


def test_tools_are_pinned():
    pins = (ROOT / ".ci" / "constraints.txt").read_text().lower()
    for name in ("ruff", "mypy", "import-linter"):
        assert f"\n{name}==" in "\n" + pins, f"{name} is not pinned in .ci/constraints.txt"
    assert shutil.which("ruff", path=str(BIN)) is not None


def test_public_names_are_declared_by_packages_only():
    """``__all__`` lives in the package ``__init__``s (the public API), the error modules and the Ray integration;
    every other module is internal, and what it shares with its siblings is simply not underscored."""
    declaring = []
    for folder in ("sdk", "kernels", "export"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            if any(
                isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets)
                for n in tree.body
            ):
                declaring.append(_module_name(path))
    assert "clipsam" in declaring and "clipsam.engine" in declaring  # the walk sees the packages
    allowed = ("clipsam.errors", "clipsam.serve.errors", "clipsam.integrations.ray")
    internal = [m for m in declaring if m not in allowed and not (ROOT / "sdk").joinpath(*m.split(".")[1:]).is_dir()]
    internal = [m for m in internal if m not in ("clipsam.kernels", "clipsam.export")]
    assert internal == []
