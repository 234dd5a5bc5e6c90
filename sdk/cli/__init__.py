"""Command line: ``clipsam segment | batch | export | eval | bench | serve``.

One module per subcommand (``segment.py``, ``batch.py``, ``export.py``, ``evaluate.py``, ``bench.py``, ``serve.py``),
each with
``register(subparsers)`` and its command function; the option groups and builders they share are in
``options.py``. Dependencies point one way: subcommands -> options -> the library.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import ClipSamError, Interrupted
from . import batch, bench, evaluate, export, segment, serve

__all__ = ["main", "build_parser"]

SUBCOMMANDS = (segment, batch, export, evaluate, bench, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipsam",
        description="Training-free open-vocabulary semantic segmentation: name classes in words, get a label per pixel.",
    )
    parser.add_argument("--version", action="version", version=f"clipsam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 on a ClipSamError, whose message is printed; 130 on Ctrl-C,
    saying what was finished and how to resume)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ClipSamError as e:
        print(f"clipsam {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C: what was finished and how to resume, no traceback
        said = str(e) if isinstance(e, Interrupted) else "nothing was finished."
        print(f"clipsam {args.command}: interrupted (Ctrl-C): {said}", file=sys.stderr)
        return 130
