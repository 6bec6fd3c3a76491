"""Prequential (online) evaluation: windowed accuracy, log-likelihood, calibration, head
diagnostics, checkpoint round trip, and a run end to end."""

from __future__ import annotations

import io
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from clframe.config import compose
from clframe.core.objectives import OBJECTIVES
from clframe.core.strategy import StepContext
from clframe.data.batch import Batch
from clframe.monitors.online import OnlineMonitor, ece_from_bins
from clframe.run.runner import run


class FakeHead:
    """A head whose diagnostics follow the step count."""

    def __init__(self, module: FakeModule) -> None:
        self.module = module

    def diagnostics(self) -> dict[str, torch.Tensor]:
        return {"gamma": torch.tensor(0.5 + self.module.cl_step), "noise_var": torch.tensor(2.0)}


class FakeModule:
    """What the monitor reads of a ``CLModule``: cl_step, objective, head, and where it logs."""

    def __init__(self, regression: bool = False, diagnostics: bool = False) -> None:
        self.objective = OBJECTIVES["regression" if regression else "classification"]
        self.head = FakeHead(self) if diagnostics else object()
        self.cl_step = 0
        self.last_exp: int | None = None  # the experience of the latest step
        self.logged: list[tuple[dict, int]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.logged.append((metrics, step))

    def step(self, mon: OnlineMonitor, out: torch.Tensor, y: torch.Tensor, exp: int = 0,
             loglik: torch.Tensor | None = None, n_new: int | None = None) -> None:
        """One training step as ``CLModule.training_step`` leaves it, then the step-end event."""
        batch = Batch(torch.zeros(len(y), 1), y, torch.zeros(len(y), dtype=torch.long), exp, n_new=n_new)
        ctx = StepContext(self, batch, out, torch.zeros(()), self.cl_step, exp, loglik)
        self.cl_step, self.last_exp = self.cl_step + 1, exp
        mon.on_step_end(ctx)

    def boundary(self, mon: OnlineMonitor, exp: int) -> None:
        mon.on_boundary_eval(self, exp, [])


def started(mon: OnlineMonitor, module: FakeModule) -> OnlineMonitor:
    mon.setup(module)
    return mon


def test_accuracy_and_loglik_of_known_logits_per_window_and_replayed_rows_do_not_count():
    module = FakeModule()
    mon = started(OnlineMonitor(window=2), module)
    batches = [(torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]]), torch.tensor([0, 0, 1])),
               (torch.tensor([[0.0, 3.0], [1.0, 0.0], [9.0, 0.0]]), torch.tensor([1, 1, 1])),
               (torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]), torch.tensor([1, 0, 0]))]
    for i, (logits, y) in enumerate(batches):
        module.step(mon, logits, y, exp=i // 2, n_new=2)  # the third row stands for a replayed sample
    # nothing reaches the host before an experience end (or the train end, or reading the rows)
    assert mon.state_dict()["rows"] == [] and len(mon.state_dict()["pending"]) == 1
    module.boundary(mon, 0)
    assert len(mon.state_dict()["rows"]) == 1  # the second window is still open
    mon.on_train_end(module)
    first, last = mon.rows
    assert (first["step"], first["experience"], first["n"]) == (2, 0, 4)
    assert (last["step"], last["experience"], last["n"]) == (3, 1, 2)  # the final partial window is kept
    assert first["online_acc"] == pytest.approx(0.5) and last["online_acc"] == pytest.approx(1.0)
    ll = [F.log_softmax(logits[:2], -1).gather(1, y[:2, None]).sum().item() for logits, y in batches]
    assert first["online_loglik"] == pytest.approx((ll[0] + ll[1]) / 4)
    assert last["online_loglik"] == pytest.approx(ll[2] / 2)
    s = mon.results()
    assert s["online_acc"] == pytest.approx(4 / 6) and s["n"] == 6 and s["window"] == 2
    assert s["online_loglik"] == pytest.approx(sum(ll) / 6)
    assert [(e["experience"], e["n"], e["online_acc"]) for e in s["per_experience"]] == [(0, 4, 0.5), (1, 2, 1.0)]


def calibration_data(n: int, sharpen: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits whose softmax confidence p is right with probability p; ``sharpen`` > 1
    makes the same predictions overconfident."""
    g = torch.Generator().manual_seed(seed)
    p = 0.5 + 0.5 * torch.rand(n, generator=g)
    right = torch.rand(n, generator=g) < p
    logits = torch.stack([p.log(), (1 - p).log()], 1) * sharpen
    return logits, torch.where(right, 0, 1)


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident():
    scores = {}
    for sharpen in (1.0, 6.0):
        module = FakeModule()
        mon = started(OnlineMonitor(window=1000, ece_bins=15), module)
        logits, y = calibration_data(40_000, sharpen)
        for chunk in range(4):
            module.step(mon, logits[chunk::4], y[chunk::4])
        mon.on_train_end(module)
        scores[sharpen] = (mon.rows[0]["ece"], mon.results()["ece"])
    assert scores[1.0][0] < 0.02 and scores[1.0][1] == pytest.approx(scores[1.0][0])
    assert scores[6.0][0] > 0.15
    assert ece_from_bins([2, 0, 2], [1.0, 0, 1.8], [0, 0, 2]) == pytest.approx((1.0 + 0.2) / 4)


def test_the_heads_loglik_is_used_when_given():
    module = FakeModule()
    mon = started(OnlineMonitor(window=1), module)
    logits, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    module.step(mon, logits, y, loglik=torch.tensor([-0.25, -0.75]))
    module.step(mon, logits, y)
    mon.on_train_end(module)
    given, computed = mon.rows
    assert given["online_loglik"] == pytest.approx(-0.5)
    assert computed["online_loglik"] == pytest.approx(F.log_softmax(logits, -1)[:, 0].mean().item())
    assert given["online_acc"] == computed["online_acc"] == pytest.approx(0.5)


def test_regression_plug_in_loglik_uses_the_moving_average_of_past_squared_errors():
    module = FakeModule(regression=True)
    mon = started(OnlineMonitor(window=1, ema=0.5), module)
    g = torch.Generator().manual_seed(0)
    steps = [(torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)) for _ in range(3)]
    for out, y in steps:
        module.step(mon, out, y)
    module.step(mon, torch.zeros(2, 2), torch.ones(2, 2), loglik=torch.tensor([-1.0, -3.0]))
    mon.on_train_end(module)
    s2 = torch.ones(2, dtype=torch.float64)
    for row, (out, y) in zip(mon.rows, steps):
        sq = (out - y).double().pow(2)
        ll = (-0.5 * (math.log(2 * math.pi) + s2.log() + sq / s2)).sum(1)  # per sample: summed over dims
        assert row["online_loglik"] == pytest.approx(ll.mean().item())
        assert row["online_error"] == pytest.approx(sq.mean().item())
        s2 = 0.5 * s2 + 0.5 * sq.mean(0)  # this step's errors count from the next step on
    assert mon.rows[-1]["online_loglik"] == pytest.approx(-2.0) and mon.rows[-1]["online_error"] == 1.0
    assert "ece" not in mon.rows[0] and "online_error" in mon.results()


def test_head_diagnostics_are_recorded_at_each_window_end():
    module = FakeModule(diagnostics=True)
    mon = started(OnlineMonitor(window=3), module)
    for i in range(7):
        module.step(mon, torch.randn(2, 3), torch.tensor([0, 1]), exp=i // 4)
    mon.on_train_end(module)
    assert [r["step"] for r in mon.rows] == [3, 6, 7]
    assert [r["gamma"] for r in mon.rows] == [3.5, 6.5, 7.5] and mon.rows[0]["noise_var"] == 2.0
    s = mon.results()
    assert s["gamma"] == 7.5 and s["gamma_trajectory"] == {"step": [3, 6, 7], "value": [3.5, 6.5, 7.5]}


def steps_for(regression: bool, n: int = 9) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(1)
    if regression:
        return [(torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g), i // 4) for i in range(n)]
    return [(torch.randn(3, 4, generator=g), torch.randint(0, 4, (3,), generator=g), i // 4) for i in range(n)]


@pytest.mark.parametrize("regression", [False, True])
def test_a_resumed_monitor_continues_exactly(regression):
    steps = steps_for(regression)

    def play(mon: OnlineMonitor, module: FakeModule, part: list) -> None:
        for out, y, exp in part:
            if module.last_exp is not None and exp != module.last_exp:
                module.boundary(mon, module.last_exp)
            module.step(mon, out, y, exp=exp)

    module = FakeModule(regression, diagnostics=True)
    whole = started(OnlineMonitor(window=2, ema=0.9), module)
    play(whole, module, steps)
    whole.on_train_end(module)

    module = FakeModule(regression, diagnostics=True)
    first = started(OnlineMonitor(window=2, ema=0.9), module)
    play(first, module, steps[:5])  # mid-window, with windows still queued on the "device"
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    second = OnlineMonitor(window=2, ema=0.9)
    second.load_state_dict(torch.load(buf, weights_only=True))  # as checkpoints load
    started(second, module)
    play(second, module, steps[5:])
    second.on_train_end(module)
    assert second.rows == whole.rows and len(whole.rows) == 5
    assert json.dumps(second.results()) == json.dumps(whole.results())


RUN = ["scenario=label_permuted", "scenario.n_tasks=3", "scenario.samples_per_task=40", "train.batch_size=4",
       "backbone.hidden=[16]", "monitors.continual.enabled=false", "monitors.online.enabled=true",
       "monitors.online.window=4", "logger.progress=false"]


def test_a_run_writes_the_online_metrics_and_figure(tmp_path):
    s = run(compose(RUN + ["checkpoint.enabled=false"]), tmp_path)
    online = s["online"]
    assert 0.0 <= online["online_acc"] <= 1.0 and online["n"] == 120 and online["window"] == 4
    assert [e["experience"] for e in online["per_experience"]] == [0, 1, 2]
    lines = (tmp_path / "online.csv").read_text().splitlines()
    assert lines[0].startswith("step,experience,n,online_acc,online_loglik,ece") and len(lines) == 1 + 8
    assert (tmp_path / "plots" / "online.png").stat().st_size > 5_000
    assert json.loads((tmp_path / "summary.json").read_text())["online"]["n"] == 120


def test_a_run_resumed_mid_window_records_the_same_online_metrics(tmp_path):
    ckpt = ["checkpoint.every=5", "checkpoint.keep=100"]
    a = run(compose(RUN + ckpt), tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for p in (tmp_path / "b" / "checkpoints").glob("*.ckpt"):
        if int(p.name.split("-")[1].split(".")[0]) > 17:  # resume at step 15: mid window, one window queued
            p.unlink()
    (tmp_path / "b" / "summary.json").unlink()
    b = run(compose(RUN + ckpt + [f"resume={tmp_path / 'b'}"]), tmp_path / "x")
    assert b["resumed_from"].endswith(".ckpt") and json.dumps(a["online"]) == json.dumps(b["online"])
    assert (tmp_path / "a" / "online.csv").read_text() == (tmp_path / "b" / "online.csv").read_text()
