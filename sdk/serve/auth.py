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
from .errors import ServeError


def load_api_key(env: str | None = None, file: str | os.PathLike | None = None) -> str | None:
    """The key from the environment variable ``env`` or the first line of ``file`` (None when neither is given).

    Raises:
        ClipSamError: both given, the variable unset or empty, the file missing, unreadable or empty.
    """
    if env and file:
        raise ClipSamError("give the API key through an environment variable or a file, not both")
    if env:
        key = os.environ.get(env, "").strip()
        if not key:
            raise ClipSamError(f"the API key variable {env} is not set or empty; export {env}=<key> or drop the option")
        return key
    if file:
        try:
            lines = Path(file).read_text(encoding="utf-8").strip().splitlines()
        except OSError as e:
            raise ClipSamError(f"cannot read the API key file {file}: {e}") from None
        if not lines or not lines[0].strip():
            raise ClipSamError(f"the API key file {file} is empty; write the key on its first line")
        return lines[0].strip()
    return None


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
