"""The one error type of the service, on both sides of the wire.

The server raises ``ServeError(status, code, message)`` for every request it refuses and answers it as
``{"error": {"code": ..., "message": ...}}`` with that HTTP status; ``clipsam.serve.Client`` raises the same
type, rebuilt from that answer. Codes are stable strings (README, "Serving"); messages name the problem.
"""

from __future__ import annotations

from ..errors import ClipSamError

__all__ = ["ServeError", "error_status"]


class ServeError(ClipSamError):
    """A request the service refused or could not finish.

    Attributes:
        status: HTTP status code (4xx: the request is at fault, 5xx: the server).
        code: machine-readable reason, e.g. ``malformed_image``, ``too_many_classes``, ``unknown_option``.
        message: what is wrong and how to fix it.
        headers: extra HTTP headers of the answer (``X-Clipsam-Batch`` for a request that failed in a batch).
    """

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = int(status)
        self.code = code
        self.message = message
        self.headers = dict(headers or {})  # extra HTTP headers of the answer (e.g. X-Clipsam-Batch)

    def to_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

    def __repr__(self) -> str:
        return f"ServeError({self.status}, {self.code!r}, {self.message!r})"


def error_status(exc: BaseException) -> ServeError:
    """The ``ServeError`` a segmentation failure becomes: clipsam's input errors are the request's fault (400,
    named after the error's kind); an image beyond what exported engines serve is 413 ``image_too_large``;
    anything else is the server's (500, ``segmentation_failed``).

    ``EngineLimitError`` is raised only while segmenting, for the patch grid of an image's windows (more patches a
    side than the export's ``--max-side`` serves: sdk/engine/dense.py, sdk/ops/sfr.py; a window under one patch is
    refused before, as ``InvalidImageError``, by sdk/preprocess.py), so it depends on the request's image."""
    from ..errors import (
        ConfigError,
        EngineLimitError,
        InvalidImageError,
        InvalidInputError,
        InvalidTypeError,
        VocabularyError,
    )

    if isinstance(exc, ServeError):
        return exc
    if isinstance(exc, EngineLimitError):
        return ServeError(
            413,
            "image_too_large",
            f"the image is beyond what this server's exported engines serve: {str(exc).rstrip('.')}. Send a "
            "smaller or less elongated image (crop it), or ask the operator to re-export the engines with a larger "
            "--max-side.",
        )
    for kind, code in (
        (InvalidImageError, "malformed_image"),
        (VocabularyError, "bad_vocabulary"),
        (ConfigError, "bad_option"),
        (InvalidInputError, "bad_input"),
        (InvalidTypeError, "bad_input"),
    ):
        if isinstance(exc, kind):
            return ServeError(400, code, str(exc))
    return ServeError(500, "segmentation_failed", f"segmentation failed: {type(exc).__name__}: {exc}")
