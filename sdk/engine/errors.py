"""Errors of the exported-engine runtime; all are ``clipsam.ClipSamError``s and name the fix."""

from __future__ import annotations

from ..errors import BackendUnavailableError, ClipSamError

__all__ = ["EngineError", "EngineFileError", "ManifestMismatchError", "ProviderError", "EngineLimitError"]


class EngineError(ClipSamError):
    """An engine folder cannot be used."""


class EngineFileError(EngineError):
    """A file of the engine folder is missing, corrupt, or not the one the manifest names."""


class ManifestMismatchError(EngineError, ValueError):
    """The engine folder was exported for something other than what the runtime is asked to do."""


class ProviderError(BackendUnavailableError):
    """A requested ONNX Runtime execution provider is not available or did not load."""


class EngineLimitError(EngineError, ValueError):
    """An input is outside what the exported engines serve (e.g. a patch grid beyond ``max_grid``)."""
