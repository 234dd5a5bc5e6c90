"""Run the ``clipsam`` command line in this process (``clipsam.cli.main``) and capture what it prints.

A new Python process spends seconds importing torch and loading the compiled kernels before a command starts, so
tests of a command's options, outputs and messages call ``main`` here; the tests of the installed entry point, of
signals and of what a second process sees keep a subprocess.
"""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

from clipsam.cli import main


@dataclass(frozen=True)
class CliRun:
    """What a command returned (``returncode``: 0, 2 for a ClipSamError or a usage error) and printed."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, check: bool = True, cwd=None) -> CliRun:
    """``clipsam ARGS...`` in this process (``cwd``: the folder to run it in); with ``check`` a nonzero exit is an
    AssertionError showing both streams. An exception other than ``SystemExit`` (argparse's ``--help`` and usage
    errors) propagates: the command would have printed a traceback."""
    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main([os.fspath(a) for a in args])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(before)
    run = CliRun(code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"exit {code}\nstdout: {run.stdout}\nstderr: {run.stderr}")
    return run
