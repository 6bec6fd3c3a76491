"""The continual evaluator under ``eval.budget``: it evaluates less often when evaluation is slow
against the steps, never more often than ``every``, always at the start and at experience ends, shrugs
off one slow evaluation, refuses a budget outside (0, 1] and continues on a resume. Time comes from a
fake clock (seconds per step, seconds per evaluation), so the schedules are deterministic."""

from __future__ import annotations

import csv
import math
import shutil

import numpy as np
import pytest

import clframe.monitors.continual as continual
from clframe.checkpoint.files import list_checkpoints, load_checkpoint
from clframe.config import compose
from clframe.errors import ConfigError
from clframe.monitors.continual import ContinualEvaluator
from clframe.run.runner import build, fit, run

# 2 experiences of split digits, 10 epochs: 220 steps each; every experience evaluated in each evaluation
TINY = ["scenario.n_experiences=2", "backbone.hidden=[16]", "train.epochs=10", "logger.progress=false",
        "monitors.continual.on=all", "monitors.continual.every=5"]
STEP_S = 1.0


class FakeClock:
    """The host clock of this process as if each optimizer step took ``STEP_S`` and each evaluation
    ``eval_s`` seconds (``slow``: {n: seconds} for the n-th evaluation, counted from 0); nothing else
    takes time."""

    def __init__(self, eval_s: float, slow: dict[int, float] | None = None) -> None:
        self.eval_s, self.slow, self.now, self.spent, self.evaluations = eval_s, slow or {}, 0.0, 0.0, 0

    def __call__(self, module) -> tuple[float, float]:
        return self.now, 0.0

    def step(self) -> None:
        self.now += STEP_S

    def charge(self) -> None:
        cost = self.slow.get(self.evaluations, self.eval_s)
        self.now, self.spent, self.evaluations = self.now + cost, self.spent + cost, self.evaluations + 1


@pytest.fixture
def clock(monkeypatch):
    """``clock(eval_s, slow)`` installs a ``FakeClock`` that each evaluation advances."""

    def install(eval_s: float, slow: dict[int, float] | None = None) -> FakeClock:
        fake = FakeClock(eval_s, slow)
        evaluate, step_end = ContinualEvaluator.evaluate, ContinualEvaluator.on_step_end

        def timed(self, module):
            evaluate(self, module)
            fake.charge()

        def stepped(self, ctx):
            fake.step()  # the step that just ended took its time
            step_end(self, ctx)

        monkeypatch.setattr(continual, "clock", fake)
        monkeypatch.setattr(ContinualEvaluator, "evaluate", timed)
        monkeypatch.setattr(ContinualEvaluator, "on_step_end", stepped)
        return fake

    return install


def _fit(*overrides: str):
    built = build(compose([*TINY, *overrides]))
    fit(built)
    return built, built.monitor("continual").curve(built.module)


def _periodic_gaps(curve, boundaries) -> np.ndarray:
    """Steps from each evaluation to the next one that is neither at an experience end nor the start."""
    steps = curve.steps
    return np.array([b - a for a, b in zip(steps[:-1], steps[1:]) if b not in boundaries])


def test_slow_evaluation_is_spread_out_to_the_budget_and_training_is_unchanged(clock):
    budget, eval_s = 0.2, 10.0  # one evaluation costs 10 steps: 50 steps apart at 0.2
    fake = clock(eval_s)
    built, curve = _fit(f"eval.budget={budget}")
    m = built.module
    # what the evaluations cost against the steps: the budget, plus the ones that always happen
    always = (1 + len(m.boundaries)) * eval_s
    assert fake.spent <= budget * STEP_S * m.cl_step + always
    fixed, fixed_curve = _fit()
    assert len(curve.steps) < len(fixed_curve.steps)
    # before training and at every experience end, budget or not
    assert {0, *m.boundaries} <= set(curve.steps.tolist())
    # typically as far apart as the budget allows (the first period is every, the first after a switch half)
    assert np.median(_periodic_gaps(curve, m.boundaries)) >= math.ceil(eval_s / (budget * STEP_S))
    # the evaluator restores the RNG and the weights: training is the same as with a fixed period
    assert m.acc_matrix == fixed.module.acc_matrix
    # the same timings give the same schedule
    clock(eval_s)
    _, again = _fit(f"eval.budget={budget}")
    assert again.steps.tolist() == curve.steps.tolist()


def test_cheap_evaluation_never_comes_more_often_than_every(clock):
    clock(1e-4)
    built, curve = _fit("eval.budget=0.5", "monitors.continual.every=7")
    gaps = _periodic_gaps(curve, built.module.boundaries)
    assert gaps.min() >= 7
    assert np.median(gaps) == 7  # the budget would allow more: every is the limit


def test_one_slow_evaluation_does_not_stall_the_curve(clock):
    budget, eval_s = 0.2, 4.0
    steady = math.ceil(eval_s / (budget * STEP_S))
    clock(eval_s, slow={8: 40 * eval_s})
    built, curve = _fit(f"eval.budget={budget}")
    after = curve.steps[8:]
    gaps = _periodic_gaps(curve, built.module.boundaries)
    assert len(after) > 3
    # the slow evaluation at most doubles the period while it is repaid
    assert gaps.max() <= 2 * steady + 1


@pytest.mark.parametrize("budget, bound", [(0, "> 0"), (-0.1, "> 0"), (1.5, "<= 1")])
def test_a_budget_outside_0_1_is_a_config_error_naming_the_range(budget, bound):
    with pytest.raises(ConfigError, match=rf"'eval.budget' must be {bound}, got {budget}\. It is a fraction .* "
                                          r"in \(0, 1\].*eval.budget=null"):
        build(compose([*TINY, f"eval.budget={budget}"]))


def _continual_steps(run_dir) -> list[int]:
    with open(run_dir / "metrics.csv") as f:
        return sorted({int(r["step"]) for r in csv.DictReader(f) if r["kind"] == "continual"})


def test_a_resumed_run_with_a_budget_continues_its_schedule(clock, tmp_path):
    clock(10.0)
    over = [*TINY, "eval.budget=0.2", "checkpoint.every=100", "checkpoint.keep=100"]
    ref = run(compose(over), tmp_path / "ref")
    ref_steps = _continual_steps(tmp_path / "ref")
    # interrupted in the second experience, at a checkpoint taken right after an evaluation
    cut = 300
    assert cut in ref_steps and cut < ref["steps"]
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "ref", copy)
    for step, path in list_checkpoints(copy):
        if step > cut:
            path.unlink()
    (copy / "summary.json").unlink()
    clock(10.0)  # a new process: its own clock
    resumed = run(compose([*over, f"resume={copy}"]), tmp_path / "unused")
    assert resumed["resumed_from"].endswith(f"step-{cut:08d}.ckpt")
    assert resumed["acc_matrix"] == ref["acc_matrix"]
    # the budget's measurements and period came back: the same evaluations as without the interruption
    assert _continual_steps(copy) == ref_steps
    assert resumed["continual_budget"] == ref["continual_budget"]
    # the measured step and evaluation times too
    last = [load_checkpoint(list_checkpoints(d)[-1][1])["monitors"]["continual"] for d in (copy, tmp_path / "ref")]
    assert last[0]["budget"] == last[1]["budget"]
