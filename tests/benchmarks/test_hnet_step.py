"""benchmarks/hnet_step.py runs at tiny sizes; its batched regulariser equals the looped one and HnetReg's."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from clframe.strategies.hnet_reg import HnetReg

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hnet_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("hnet_step_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_main_reports_every_hypernet_and_k(bench, capsys):
    threads = torch.get_num_threads()
    try:
        results = bench.main(["--steps", "2", "--warmup", "1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert set(results) == {"hnet_mlp", "hnet_rnn"}
    for name, r in results.items():
        assert set(r) == {"batched", "loop"}
        for mode in ("batched", "loop"):
            assert set(r[mode]) == {0, 1, 5, 20}, (name, mode)
            assert all(t > 0 for t in r[mode].values()), (name, mode, r[mode])
        assert name in out
    assert "(loop)/(batched)" in out and "time(20)/time(1)" in out


@pytest.mark.parametrize("name", ["hnet_mlp", "hnet_rnn"])
def test_batched_regulariser_equals_looped(bench, name):
    cfg = bench.Config(name, 5, bench.reg_batched, torch.device("cpu"))
    for _ in range(3):  # move Theta away from the targets, so the regulariser is not trivially 0
        cfg.step()
    hn, past, targets = cfg.hn, cfg.past, cfg.targets
    batched = bench.reg_batched(hn, past, targets)
    theta = [p for _, p in hn.theta()]
    g_batched = torch.autograd.grad(batched, theta)
    looped = bench.reg_loop(hn, past, targets)
    g_looped = torch.autograd.grad(looped, theta)
    assert float(batched) > 0
    strategy = HnetReg(beta=bench.BETA)  # the benchmark's batched term is the strategy's own
    strategy.past, strategy.targets = past, targets
    ctx = SimpleNamespace(module=SimpleNamespace(model=hn))
    assert torch.allclose(strategy.loss_terms(ctx)["hnet_reg"], batched, rtol=1e-6, atol=1e-7)
    assert torch.allclose(batched, looped, rtol=1e-5, atol=1e-5), (float(batched), float(looped))
    for a, b in zip(g_batched, g_looped):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
