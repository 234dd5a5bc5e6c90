"""Integer settings read from environment variables, with one rule for all of them.

A value is plain decimal digits (ASCII, no sign, no leading zero, no spaces inside): what a shell script writes.
Anything else ("²", "+2", "02", "2.0", "two") is a ``ConfigError`` naming the variable and the fix, never a guess.
"""

from __future__ import annotations

import os

from .errors import ConfigError


def env_int(name: str, minimum: int, meaning: str, unset: str) -> int | None:
    """The integer in environment variable ``name`` (None when it is unset or blank).

    Arguments:
        minimum: the smallest value allowed.
        meaning: what the value means, shown in the error ("0: decode in the calling thread").
        unset: what leaving the variable unset does, shown in the error ("for all CPUs").
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit() and str(int(value)) == value and int(value) >= minimum:
        return int(value)
    raise ConfigError(
        f"{name} must be an integer >= {minimum} ({meaning}; decimal digits only), got {value!r}; unset it {unset}"
    )
