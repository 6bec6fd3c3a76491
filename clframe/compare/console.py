"""Where ``clframe compare`` prints: a rich console on stdout or stderr, and warnings."""

from __future__ import annotations

from typing import Any


def make_console(stderr: bool = False) -> Any:
    """A rich Console on stdout (or stderr), resolved now (so that redirected streams are honoured)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def warning(msg: str) -> None:
    """``warning: <msg>`` on stderr, in yellow in a terminal."""
    make_console(stderr=True).print(f"warning: {msg}", style="yellow", markup=False, highlight=False, soft_wrap=True)
