"""The whole ONNX Runtime pipeline (text, dense + SFR, post-processing, SAM2 refinement) in a process where
importing torch (or open_clip, sam2, regex, ftfy) raises."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from clipsam.engine import EngineSegmenter
from clipsam.refine import RefineConfig

SCRIPT = textwrap.dedent("""
    import importlib.abc, sys

    BLOCKED = ("torch", "torchvision", "open_clip", "sam2", "triton", "regex", "ftfy", "hydra")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    try:
        import torch  # noqa: F401
        raise SystemExit("torch imported")
    except ImportError:
        pass

    import numpy as np
    from clipsam import Segmenter  # the lazy public API imports no torch either
    from clipsam.engine import EngineSegmenter
    from clipsam.refine import RefineConfig

    folder, image, out = sys.argv[1:4]
    cfg = RefineConfig(stuff_classes=(0,), min_confidence=0.0, min_mask_score=0.0, max_prompts_per_image=4)
    seg = EngineSegmenter(folder, short_side=64, refine=cfg)
    res = seg.segment(np.load(image))
    np.save(out, res.labels)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("instances", res.info["refine"]["instances"], "providers", res.info["providers"])
""")


def test_full_pipeline_without_torch(engine_dir, chelsea_small, tmp_path):
    folder = engine_dir("resclip")
    script, image, out = tmp_path / "run.py", tmp_path / "image.npy", tmp_path / "labels.npy"
    script.write_text(SCRIPT)
    np.save(image, chelsea_small)
    proc = subprocess.run(
        [sys.executable, str(script), str(folder), str(image), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert "providers ['CPUExecutionProvider']" in proc.stdout
    cfg = RefineConfig(stuff_classes=(0,), min_confidence=0.0, min_mask_score=0.0, max_prompts_per_image=4)
    expected = EngineSegmenter(folder, short_side=64, refine=cfg).segment(chelsea_small).labels
    np.testing.assert_array_equal(np.load(out), expected)
