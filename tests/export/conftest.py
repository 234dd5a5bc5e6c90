"""Session fixtures: exported engine folders (tests/engine/engines.py) and the torch references they must match."""

from __future__ import annotations

import pytest

from ..engine import engines

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def engine_dir(tiny_clip, tmp_path_factory):
    """Factory: engine folder by name (``engines.SPECS``), exported once per session."""
    pytest.importorskip("onnx")

    def get(name: str = "resclip"):
        return engines.build(name, tiny_clip, tmp_path_factory)

    return get


@pytest.fixture(scope="session")
def tiny_sam2():
    pytest.importorskip("sam2")
    return engines.tiny_sam2()
