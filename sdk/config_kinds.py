"""Type checks of configuration fields: each option has a kind ("int", "reals", "str?", ...), and a dataclass whose
field holds a value of another type fails with a ``ConfigError`` naming the option. Shared by ``clipsam.config`` and
``clipsam.method_config``."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .errors import ConfigError

KIND_TEXT = {
    "bool": "True or False",
    "int": "an integer",
    "ints": "a tuple of integers",
    "real": "a finite number",
    "reals": "a tuple of finite numbers",
    "str": "a string",
    "templates": "a template-set name or a list of strings",
}


def is_kind(value: Any, kind: str) -> bool:
    """Whether ``value`` is of ``kind`` (a key of ``KIND_TEXT``, optionally ending in "?" for "or None")."""

    def integer(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))

    def real(v):
        return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and math.isfinite(v)

    if kind.endswith("?"):
        return value is None or is_kind(value, kind[:-1])
    if kind == "bool":
        return isinstance(value, (bool, np.bool_))
    if kind in ("int", "real", "str"):
        return {"int": integer, "real": real, "str": lambda v: isinstance(v, str)}[kind](value)
    if kind == "templates":
        return isinstance(value, str) or (isinstance(value, (tuple, list)) and all(isinstance(t, str) for t in value))
    check = integer if kind == "ints" else real
    return isinstance(value, (tuple, list)) and all(check(v) for v in value)


def check_fields(
    obj: Any, kinds: Mapping[str, str], rename: Mapping[str, str] | None = None, skip: Iterable[str] = ()
) -> None:
    """``ConfigError`` naming the option when a field of the dataclass ``obj`` is not of its kind; list values
    become tuples (the caller's list is not kept) and numpy scalars Python numbers (so that a config and a result's
    info stay JSON-serialisable).

    Arguments:
        kinds: option name -> kind; fields without a kind are not checked.
        rename: field name -> option name, where they differ.
        skip: fields not checked (nested groups that check themselves).
    """
    skipped = set(skip)
    for f in dataclasses.fields(obj):
        if f.name in skipped:
            continue
        name = (rename or {}).get(f.name, f.name)
        kind = kinds.get(name)
        value = getattr(obj, f.name)
        if kind is not None and not is_kind(value, kind):
            text = KIND_TEXT[kind.rstrip("?")] + (" or None" if kind.endswith("?") else "")
            raise ConfigError(f"{name} must be {text}, got {type(value).__name__} {value!r:.80}")
        if isinstance(value, np.generic):  # np.int64(64), np.float32(0.1): plain Python numbers (JSON, repr)
            object.__setattr__(obj, f.name, value.item())
        elif isinstance(value, (list, tuple)) and any(isinstance(v, np.generic) for v in value):
            object.__setattr__(obj, f.name, tuple(v.item() if isinstance(v, np.generic) else v for v in value))
        elif isinstance(value, list):  # a frozen config holds tuples: hashable, and no alias of the caller's list
            object.__setattr__(obj, f.name, tuple(value))
