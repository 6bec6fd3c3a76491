"""Helpers shared by the CLI tests."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from clframe import cli
from clframe.cli import run as cli_run


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """``clframe.cli.main(argv)`` in-process: (exit code, stdout, stderr)."""
    code = 0
    try:
        cli.main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@contextmanager
def hydra_in_process() -> Iterator[None]:
    """Undo what running Hydra in-process leaves behind: sys.argv, logging handlers, the sweep list."""
    mp = pytest.MonkeyPatch()
    mp.setattr(sys, "argv", list(sys.argv))
    mp.setattr(cli_run, "_SWEEP_DIRS", [])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for h in root.handlers:
            if h not in handlers:
                h.close()
        root.handlers[:], root.level = handlers, level
        mp.undo()
