"""A CLIP model-config JSON file (``clip="x.json"``) is checked before open_clip registers it: each problem is a
ConfigError naming the file, and a bad file leaves later loads in the process working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipsam.clip_config import check_model_config
from clipsam.errors import ConfigError

from .conftest import TINY_VIT

GOOD = json.loads(Path(TINY_VIT).read_text())


def _with(tower: str, **changes) -> str:
    return json.dumps({**GOOD, tower: {**GOOD[tower], **changes}})


@pytest.mark.parametrize(
    "text, why",
    [
        ("{oops", r"is not valid JSON: Expecting property name .* at line 1"),
        ("[1, 2]", "holds a list, not a JSON object"),
        ("{}", "has no embed_dim, vision_cfg, text_cfg"),
        (json.dumps({"embed_dim": 64, "text_cfg": {}}), "has no vision_cfg"),
        (json.dumps({**GOOD, "embed_dim": 0}), "embed_dim must be a positive integer, got 0"),
        (json.dumps({**GOOD, "vision_cfg": [1]}), "vision_cfg must be an object, got list"),
        (_with("vision_cfg", patch_size=0), "vision_cfg.patch_size must be a positive integer, got 0"),  # was 1/0
        (_with("vision_cfg", width="x"), "vision_cfg.width must be a positive integer, got 'x'"),  # was a TypeError
        (_with("text_cfg", heads=True), "text_cfg.heads must be a positive integer, got True"),
        (_with("vision_cfg", patch_size=15), "image_size 224 is not a multiple of patch_size 15"),
    ],
)
def test_bad_model_config_files_are_named_errors(tmp_path, text, why):
    from clipsam.models import load_clip

    f = tmp_path / "my-vit.json"
    f.write_text(text)
    with pytest.raises(ConfigError, match=why):
        check_model_config(f)
    with pytest.raises(ConfigError, match="CLIP model config .*my-vit.json"):
        load_clip(str(f), None)


def test_valid_variants_pass_and_a_bad_file_does_not_break_later_loads(tmp_path):
    from clipsam.models import load_clip

    assert check_model_config(Path(TINY_VIT))["embed_dim"] == GOOD["embed_dim"]
    f = tmp_path / "pair.json"
    f.write_text(_with("vision_cfg", image_size=[224, 224], layers=[1, 1]))  # (H, W) size, ResNet-style layers
    assert check_model_config(f)["vision_cfg"]["layers"] == [1, 1]
    bad = tmp_path / "broken.json"
    bad.write_text("{oops")
    with pytest.raises(ConfigError):
        load_clip(str(bad), None)
    with pytest.warns(UserWarning, match="RANDOM weights"):
        assert load_clip(str(TINY_VIT), None).arch == Path(TINY_VIT).stem  # open_clip never saw the broken file
