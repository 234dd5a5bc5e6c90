"""The optional API key: read once from an environment variable or a file, kept as a SHA-256 digest.

Replicas receive the digest only (never the key), and compare the digest of each request's bearer token with it
in constant time. Every route but ``/v1/health`` and ``/v1/ready`` (and the page's static HTML, which holds no
data and asks for the key) needs ``Authorization: Bearer <key>`` when a key is set.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from ..errors import ClipSamError
from ..paths import shown
from .errors import ServeError


def load_api_key(env: str | None = None, file: str | os.PathLike | None = None) -> str | None:
    """The key from the environment variable ``env`` or the first line of ``file`` (None when neither is given).

    Raises:
        ClipSamError: both given, the variable unset or empty, the file missing, unreadable, not UTF-8 text or empty,
            or a key with characters other than printable ASCII (an HTTP header could not carry it).
    """
    if env and file:
        raise ClipSamError("give the API key through an environment variable or a file, not both")
    if env:
        key = os.environ.get(env, "").strip()
        if not key:
            raise ClipSamError(f"the API key variable {env} is not set or empty; export {env}=<key> or drop the option")
        return _checked(key, f"the API key in {env}")
    if file:
        try:
            lines = Path(file).read_text(encoding="utf-8").strip().splitlines()
        except OSError as e:
            raise ClipSamError(f"cannot read the API key file {shown(file)}: {e}") from None
        except UnicodeDecodeError:
            raise ClipSamError(
                f"the API key file {shown(file)} is not UTF-8 text; write the key as text on its first line "
                "(e.g. openssl rand -hex 32 > FILE)"
            ) from None
        if not lines or not lines[0].strip():
            raise ClipSamError(f"the API key file {shown(file)} is empty; write the key on its first line")
        return _checked(lines[0].strip(), f"the API key on the first line of {shown(file)}")
    return None


def _checked(key: str, where: str) -> str:
    """``key``, or a ClipSamError naming where it came from when it holds characters an HTTP header cannot carry
    (the message gives their positions, not the characters: it must not leak the key)."""
    bad = [i for i, c in enumerate(key) if not " " <= c <= "~"]
    if bad:
        raise ClipSamError(
            f"{where} has {len(bad)} character(s) that are not printable ASCII (first at position {bad[0] + 1}); "
            "clients send the key in an HTTP header, which carries printable ASCII only. Use e.g. openssl rand -hex 32"
        )
    return key


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_bearer(authorization: str | None, digest: str | None) -> None:
    """Raise 401 unless ``digest`` is None (no key set) or ``authorization`` is ``Bearer <the key>``."""
    if digest is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ServeError(
            401, "unauthorized", "this server needs an API key: send the header 'Authorization: Bearer <key>'"
        )
    if not hmac.compare_digest(key_digest(token.strip()), digest):
        raise ServeError(401, "unauthorized", "the API key is wrong")
