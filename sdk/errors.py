"""One exception family for every error clipsam raises on purpose.

Each error names the problem and the fix. Where a built-in exception type is the natural one (a bad
value, a wrong type, a missing file), the clipsam error also derives from it, so callers can catch
either ``clipsam.ClipSamError`` or the built-in they already expect.
"""

from __future__ import annotations

__all__ = [
    "ClipSamError",
    "InvalidInputError",
    "InvalidTypeError",
    "InvalidImageError",
    "VocabularyError",
    "CheckpointError",
    "ConfigError",
    "BackendUnavailableError",
    "MissingDependencyError",
    "EngineError",
    "EngineFileError",
    "ManifestMismatchError",
    "ProviderError",
    "EngineLimitError",
    "OutputError",
    "Interrupted",
    "first_line",
]


class ClipSamError(Exception):
    """Base class of every error raised by clipsam on purpose."""


class InvalidInputError(ClipSamError, ValueError):
    """An argument has a bad value (shape, range, NaN/inf, ...)."""


class InvalidTypeError(ClipSamError, TypeError):
    """An argument has the wrong type or dtype."""


class InvalidImageError(InvalidInputError):
    """An image cannot be read or is unusable (corrupt file, too small, wrong layout)."""


class VocabularyError(InvalidInputError):
    """The class vocabulary is empty, has duplicates or non-string names, or a class file is malformed."""


class CheckpointError(ClipSamError, ValueError):
    """A checkpoint file is missing, unreadable, or does not match the architecture."""


class ConfigError(InvalidInputError):
    """An unknown method, preset, option, or an inconsistent combination of options."""


class OutputError(ClipSamError, OSError):
    """An output location cannot be written: a file where a folder is needed, a read-only file system, no permission."""


class BackendUnavailableError(ClipSamError, RuntimeError):
    """A requested backend, provider, device or kernel cannot run here."""


class MissingDependencyError(ClipSamError, ImportError):
    """An optional dependency is not installed; the message names the pip extra that provides it."""


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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a command, carrying what was finished and how to resume. A ``KeyboardInterrupt`` (not a
    ClipSamError), so ``except Exception`` never swallows it; the CLI prints its message and exits 130."""


def missing_dependency(module: str, extra: str, what: str) -> MissingDependencyError:
    """Build the error raised when ``module`` is needed for ``what`` but is not installed."""
    return MissingDependencyError(
        f"{what} needs the Python package '{module}', which is not installed. "
        f"Install it with: pip install 'clipsam[{extra}]'"
    )


def first_line(error: BaseException, width: int = 200) -> str:
    """``"TypeName: first line of the message"`` of a library's exception, for a one-line clipsam message (the
    message may be empty or span pages)."""
    lines = str(error).strip().splitlines()
    text = lines[0].strip()[:width] if lines else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
