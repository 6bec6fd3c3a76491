"""Helpers shared by the CLI tests."""

from __future__ import annotations

from clframe import cli


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """``clframe.cli.main(argv)`` in-process: (exit code, stdout, stderr)."""
    code = 0
    try:
        cli.main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
