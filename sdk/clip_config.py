"""An open_clip model-config JSON file (``clip="my-vit.json"``), checked before open_clip sees it.

open_clip registers such a file in a process-wide list and re-reads every file in that list whenever it looks up
a model: a file it cannot parse would make every later load in the process fail, and a config without the
fields it needs fails deep inside it (``Model config for 'x' not found in built-ins``, ``ZeroDivisionError``,
``TypeError``). ``check_model_config`` reads the file first and names what is wrong, so that only a file open_clip
can build from is ever registered.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .paths import shown

# sizes that must be positive integers where present (a ViT's or a text tower's)
_SIZES = ("image_size", "layers", "width", "head_width", "patch_size", "heads", "context_length", "vocab_size")


def _positive_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) > 0


def _size_ok(key: str, v: Any) -> bool:
    if key == "image_size" and isinstance(v, (list, tuple)) and len(v) == 2:  # (height, width)
        return all(_positive_int(x) for x in v)
    if key == "layers" and isinstance(v, (list, tuple)) and v:  # a ResNet tower's blocks per stage
        return all(_positive_int(x) for x in v)
    return _positive_int(v)


def check_model_config(path: Path) -> dict[str, Any]:
    """The parsed config of the model-config file ``path``, or a ``ConfigError`` naming the file and the problem.

    Checks: valid JSON; an object with ``embed_dim`` (a positive integer), ``vision_cfg`` and ``text_cfg``
    (objects); every size in them (``image_size``, ``layers``, ``width``, ``head_width``, ``patch_size``,
    ``heads``, ``context_length``, ``vocab_size``) a positive integer where given; ``image_size`` divisible by
    ``patch_size``.
    """
    fix = "See open_clip's model_configs/*.json (e.g. ViT-B-16.json) for the expected layout."
    try:
        cfg = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"CLIP model config {shown(path)} cannot be read ({e}); save it as UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"CLIP model config {shown(path)} is not valid JSON: {e.msg} at line {e.lineno}. {fix}"
        ) from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"CLIP model config {shown(path)} holds a {type(cfg).__name__}, not a JSON object. {fix}")
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise ConfigError(f"CLIP model config {shown(path)} has no {', '.join(missing)}. {fix}")
    if not _positive_int(cfg["embed_dim"]):
        raise ConfigError(
            f"CLIP model config {shown(path)}: embed_dim must be a positive integer, got {cfg['embed_dim']!r}"
        )
    for tower in ("vision_cfg", "text_cfg"):
        part = cfg[tower]
        if not isinstance(part, dict):
            raise ConfigError(f"CLIP model config {shown(path)}: {tower} must be an object, got {type(part).__name__}")
        for key in _SIZES:
            if key in part and not _size_ok(key, part[key]):
                raise ConfigError(
                    f"CLIP model config {shown(path)}: {tower}.{key} must be a positive integer, got {part[key]!r}"
                )
    vision = cfg["vision_cfg"]
    size, patch = vision.get("image_size"), vision.get("patch_size")
    if _positive_int(size) and _positive_int(patch) and size % patch:
        raise ConfigError(
            f"CLIP model config {shown(path)}: vision_cfg.image_size {size} is not a multiple of patch_size {patch}"
        )
    return cfg
