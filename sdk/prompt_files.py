"""Prompt files: per-class context prompts, descriptions, disambiguation maps and template lists, in JSON or YAML.

Formats (the format follows the extension: ``.json``, ``.yaml`` / ``.yml``; ``.txt`` only for templates):

* context prompts and descriptions: a mapping ``{class name: [sentence, ...]}``, every list non-empty and of
  strings, e.g. ``{"cat": ["a photo of a cat curled up on a sofa.", ...]}``;
* disambiguation: ``{name: replacement}`` (strings), or ``{"map": {name: replacement}}`` beside other keys;
* templates: a list of strings with one ``{}`` each (JSON / YAML), or a text file with one template per line.

Top-level keys starting with ``_`` (e.g. ``"_comment"``) are ignored. Every error is a ``ConfigError`` naming the
file and the problem: a missing file, a parse error with its line and column, a wrong structure, a non-string entry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ConfigError, first_line
from .paths import shown

_DATA = Path(__file__).parent / "data"
SHIPPED = {
    ("context_prompts", "default"): _DATA / "prompts" / "context.json",
    ("disambiguate", "default"): _DATA / "prompts" / "disambiguation.json",
    ("descriptions", "voc20"): _DATA / "descriptions" / "voc20.json",
    ("descriptions", "coco80"): _DATA / "descriptions" / "coco80.json",
}


def shipped_path(kind: str, name: str) -> Path | None:
    """The packaged file behind a shipped name ("default", "voc20", "coco80"), or None."""
    return SHIPPED.get((kind, name))


def read_structured(path: str | os.PathLike, what: str):
    """Parse a JSON or YAML file; ``what`` names its role in error messages ("context-prompt file")."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {shown(path)}")
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ConfigError(
            f"{what} {shown(path)}: unknown format {suffix or '(no extension)'!r}; use .json, .yaml or .yml"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {shown(path)} cannot be read ({e})") from e
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{what} {shown(path)} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
            ) from e
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or first_line(e)
        raise ConfigError(f"{what} {shown(path)} is not valid YAML: {problem}{where}") from e


def _entries(data, source: str) -> dict:
    """The top-level mapping without ``_``-prefixed keys; every key a non-empty string."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of class name -> entries at the top level, got {type(data).__name__}"
        )
    out = {}
    for key, value in data.items():
        if isinstance(key, (bool, int, float)) and source.endswith((".yaml", ".yml")):
            raise ConfigError(
                f"{source}: the class name {key!r} is YAML's reading of an unquoted key (no/yes/off/on, or a "
                'number); quote it, e.g. "no": [...] or "2": [...]'
            )
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"{source}: class names must be non-empty strings, got {key!r}")
        if not key.startswith("_"):
            out[key] = value
    if not out:
        raise ConfigError(f"{source}: holds no classes")
    return out


def load_sentences(source, what: str) -> tuple[dict[str, tuple[str, ...]], str]:
    """Context prompts or descriptions: ``{class: (sentence, ...)}`` from a file path or a dict.

    Returns:
        (mapping, name of the source for messages).
    """
    name = str(source) if not isinstance(source, dict) else f"{what.removesuffix(' file')} (dict)"
    data = read_structured(source, what) if not isinstance(source, dict) else source
    out = {}
    for key, value in _entries(data, name).items():
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(
                f"{name}: the entry of class {key!r} must be a non-empty list of strings, got {type(value).__name__}"
            )
        for s in value:
            if not isinstance(s, str) or not s.strip():
                raise ConfigError(
                    f"{name}: class {key!r} has a non-string or empty entry {s!r}; every entry must be a sentence"
                )
        out[key] = tuple(value)
    return out, name


def load_map(source, what: str = "disambiguation file") -> tuple[dict[str, str], str]:
    """Disambiguation map ``{name: replacement}`` from a file path or a dict (flat, or under a ``"map"`` key)."""
    name = str(source) if not isinstance(source, dict) else f"{what.removesuffix(' file')} (dict)"
    data = read_structured(source, what) if not isinstance(source, dict) else source
    if isinstance(data, dict) and isinstance(data.get("map"), dict):
        data = data["map"]
    out = {}
    for key, value in _entries(data, name).items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{name}: the replacement of {key!r} must be a non-empty string, got {value!r}")
        out[key] = value
    return out, name


def load_templates(path: str | os.PathLike) -> tuple[str, ...]:
    """Templates from a file: ``.txt`` (one per line; blank lines and ``#`` comments skipped), or a JSON/YAML list."""
    path = Path(path)
    what = "template file"
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise ConfigError(f"{what} not found: {shown(path)}")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{what} {shown(path)} cannot be read ({e}); save it as UTF-8") from e
        data = [ln.strip() for ln in text.splitlines()]
        data = [ln for ln in data if ln and not ln.startswith("#")]
    else:
        data = read_structured(path, what)
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{what} {shown(path)}: expected a non-empty list of templates, got {type(data).__name__}")
    from .text import template_problem

    for i, t in enumerate(data):
        problem = template_problem(t)
        if problem:
            raise ConfigError(f"{what} {shown(path)}: template {i + 1} ({t!r}) {problem}")
    return tuple(data)
