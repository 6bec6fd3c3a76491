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
    ("streaming.py", ["--steps", "40", "--repeats", "1"]),
    ("upgd_step.py", ["--steps", "3", "--repeats", "1"]),
    ("checkpoint_cost.py", ["--epochs", "1", "--mem-size", "50"]),
    ("rnn_throughput.py", ["--epochs", "1", "--repeats", "1"]),
    ("penalty_step.py", ["--steps", "2", "--repeats", "1"]),
    ("strategy_cost.py", ["--steps", "2", "--repeats", "1"]),
    ("online.py", ["--samples", "200", "--repeats", "1", "--skip-avalanche"]),
    ("startup.py", ["--short"]),
    ("kalman_head.py", ["--steps", "20", "--warmup", "5", "--block", "10", "--features", "16"]),
])
def test_benchmark_script_runs_and_prints_ratios(script, args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.syspath_prepend(str(BENCH))
    runpy.run_path(str(BENCH / script), run_name="__main__")
    out = capsys.readouterr().out
    # "status": the header of the figures table (benchmarks/figures.py)
    markers = ("x plain", "(a)/(b)", "(loop)/(ours)", "per checkpoint", "status")
    assert any(marker in out for marker in markers), out


def test_the_online_benchmark_compares_the_same_work(monkeypatch):
    # the plain loop and clframe's run train on the same samples: the same count, each sample once
    monkeypatch.syspath_prepend(str(BENCH))
    online = runpy.run_path(str(BENCH / "online.py"))
    import torch

    g = torch.Generator().manual_seed(0)
    exps = [(torch.rand(23, 784, generator=g), torch.full((23,), 2 * i)) for i in range(5)]
    module, loader, scenario = online["clframe_module"](exps)
    online["train"](module, loader, scenario, "auto")
    assert module.samples_seen == 5 * 23 and module.cl_step == 5 * 3  # batches of 10: 10, 10, 3
    assert online["plain"](exps) > 0
