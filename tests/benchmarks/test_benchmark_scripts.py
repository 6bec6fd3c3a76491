"""The benchmark scripts still run (tiny settings; the numbers themselves are not asserted)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("script, args", [
    ("throughput.py", ["--epochs", "1", "--repeats", "1", "--skip-avalanche"]),
    ("continual_eval.py", ["--evals", "3", "--repeats", "1", "--skip-avalanche"]),
])
def test_benchmark_script_runs_and_prints_ratios(script, args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.syspath_prepend(str(BENCH))
    runpy.run_path(str(BENCH / script), run_name="__main__")
    out = capsys.readouterr().out
    assert "x plain" in out or "(a)/(b)" in out
