"""LR schedules: each formula against hand-computed values, the strategy's choices, and runs
whose optimizer lr follows the schedule step by step."""

from __future__ import annotations

import math
from functools import partial

import pytest
from clframe.strategies.lr_schedule import LRSchedule, cosine, infinite_factor, inv_sqrt, rewarm_factor

from clframe.config import compose
from clframe.config.registry import STRATEGIES
from clframe.core.strategy import Strategy
from clframe.errors import ConfigError
from clframe.run.runner import build, fit

approx = pytest.approx


# -- the formulas -------------------------------------------------------------------
def test_cosine_and_inv_sqrt_go_from_start_to_end():
    assert cosine(0.0, 1.0, 0.2) == approx(1.0)
    assert cosine(0.5, 1.0, 0.2) == approx(0.6)
    assert cosine(1.0, 1.0, 0.2) == approx(0.2)
    assert cosine(1.7, 1.0, 0.2) == approx(0.2)  # clamped
    assert inv_sqrt(0.0, 1.0, 0.2) == approx(1.0)
    assert inv_sqrt(1.0, 1.0, 0.2) == approx(0.2)


def test_inv_sqrt_cooldown_at_a_few_points():
    # h(x) = 1/sqrt(1 + 10x) - 1; h(1) = 1/sqrt(11) - 1 = -0.6984886554
    # x = 0.1: h = 1/sqrt(2) - 1 = -0.2928932188 -> 1 - 0.8 * 0.4193243 = 0.6645406
    # x = 0.5: h = 1/sqrt(6) - 1 = -0.5917517095 -> 1 - 0.8 * 0.8471885 = 0.3222492
    # x = 0.9: h = 1/sqrt(10) - 1 = -0.6837722340 -> 1 - 0.8 * 0.9789314 = 0.2168549
    for x, expected in [(0.1, 0.6645406), (0.5, 0.3222492), (0.9, 0.2168549)]:
        assert inv_sqrt(x, 1.0, 0.2) == approx(expected, abs=1e-6)
        # it drops earlier than the cosine: x = 0.1 of the cosine is still 0.9804226
        assert inv_sqrt(x, 1.0, 0.2) < cosine(x, 1.0, 0.2)
    # a larger a drops faster
    assert inv_sqrt(0.1, 1.0, 0.2, a=100.0) < inv_sqrt(0.1, 1.0, 0.2, a=10.0)


def test_rewarm_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    # 101 steps, W = round(10.1) = 10 warm-up steps, then 90 steps of cosine to 0.1 at step 100
    f = partial(rewarm_factor, exp_steps=101, warmup_fraction=0.1)
    assert f(0) == 0.0
    assert f(5) == approx(0.5)
    assert f(10) == approx(1.0)
    assert f(25) == approx(0.1 + 0.45 * (1 + math.cos(math.pi / 6)))  # x = 1/6: 0.9397114
    assert f(25) == approx(0.9397114, abs=1e-6)
    assert f(55) == approx(0.55)  # the middle of the cosine
    assert f(100) == approx(0.1)  # the last step
    assert rewarm_factor(5, 101, warmup_fraction=0.1, warmup_start=0.2) == approx(0.6)
    assert rewarm_factor(100, 101, warmup_fraction=0.1, floor=0.0) == approx(0.0)


def test_rewarm_defaults_warm_up_over_one_percent_rounded():
    assert rewarm_factor(0, 1000) == 0.0 and rewarm_factor(5, 1000) == approx(0.5)  # W = 10
    assert rewarm_factor(0, 150) == 0.0 and rewarm_factor(1, 150) == approx(0.5)  # W = round(1.5) = 2
    assert rewarm_factor(0, 22) == approx(1.0)  # W = round(0.22) = 0: starts at the peak
    assert rewarm_factor(21, 22) == approx(0.1)


def test_rewarm_on_an_experience_too_short_to_decay_stays_at_the_peak():
    assert rewarm_factor(0, 1) == 1.0
    assert rewarm_factor(0, 2, warmup_fraction=0.5) == 0.0 and rewarm_factor(1, 2, warmup_fraction=0.5) == 1.0


def test_infinite_warmup_cooldown_and_constant():
    f = partial(infinite_factor, warmup_steps=10, cooldown_steps=20, constant=0.2)
    assert f(0) == 0.0
    assert f(5) == approx(0.5)
    assert f(10) == approx(1.0)
    assert f(20) == approx(0.6)  # cosine half-way
    assert f(12, cooldown="inv_sqrt") == approx(0.6645406, abs=1e-6)  # x = 0.1
    assert f(20, cooldown="inv_sqrt") == approx(0.3222492, abs=1e-6)  # x = 0.5
    for s in (30, 31, 500, 10**6):
        assert f(s) == approx(0.2) and f(s, cooldown="inv_sqrt") == approx(0.2)
    assert f(5, warmup_start=0.1) == approx(0.55)
    assert infinite_factor(0, warmup_steps=0, cooldown_steps=0, constant=0.3) == 0.3


def test_infinite_anneal_decays_exponentially_over_the_last_steps():
    kw = dict(warmup_steps=10, cooldown_steps=20, constant=0.2, anneal_steps=10, anneal_to=0.002, total_steps=100)
    assert infinite_factor(89, **kw) == approx(0.2)
    # steps 90..99: each step is (0.002 / 0.2) ** (1 / 10) = 0.6309573 times the one before
    assert infinite_factor(90, **kw) == approx(0.2 * 0.6309573, rel=1e-6)
    assert infinite_factor(94, **kw) == approx(0.02)  # y = 0.5: the geometric mean of 0.2 and 0.002
    assert infinite_factor(99, **kw) == approx(0.002)
    # off without the stream's length, or with anneal_steps = 0
    assert infinite_factor(99, **{**kw, "total_steps": None}) == approx(0.2)
    assert infinite_factor(99, **{**kw, "anneal_steps": 0}) == approx(0.2)


# -- the strategy ----------------------------------------------------------------------
class FakeModule:
    steps_per_experience = [60, 40]


def test_rewarm_restarts_at_every_experience():
    s = LRSchedule(schedule="rewarm", warmup_fraction=0.1)
    s.setup(FakeModule())
    first = [s.lr_factor(i, 0, i, 60) for i in range(60)]
    second = [s.lr_factor(60 + i, 1, i, 40) for i in range(40)]
    assert first[0] == second[0] == 0.0
    assert first[6] == second[4] == approx(1.0)
    assert first[-1] == second[-1] == approx(0.1)
    assert second == [rewarm_factor(i, 40, 0.1) for i in range(40)]


def test_infinite_does_not_rewarm_and_anneals_at_the_end_of_the_stream():
    s = LRSchedule(schedule="infinite", warmup_steps=5, cooldown_steps=10, cooldown="inv_sqrt", anneal_steps=20)
    s.setup(FakeModule())
    assert s.constant == 0.1 and s.total_steps == 100
    assert s.lr_factor(5, 0, 5, 60) == approx(1.0)
    assert s.lr_factor(60, 1, 0, 40) == approx(0.1)  # the second experience starts at the constant
    assert s.lr_factor(79, 1, 19, 40) == approx(0.1)
    assert s.lr_factor(99, 1, 39, 40) == approx(0.01)


def test_constant_schedule_defaults_to_the_base_lr():
    assert LRSchedule(schedule="constant").lr_factor(7, 1, 3, 10) == 1.0
    assert LRSchedule(schedule="constant", constant=0.3).lr_factor(7, 1, 3, 10) == 0.3


def test_the_strategy_keeps_no_state_so_a_fresh_one_resumes_the_schedule():
    a, b = LRSchedule(schedule="infinite", anneal_steps=30), LRSchedule(schedule="infinite", anneal_steps=30)
    a.setup(FakeModule())
    assert a.state_dict() == {}
    b.load_state_dict(a.state_dict())
    b.setup(FakeModule())
    assert [a.lr_factor(i, 0, i, 60) for i in range(100)] == [b.lr_factor(i, 0, i, 60) for i in range(100)]


@pytest.mark.parametrize(("key", "value"), [("warmup_fraction", 1.5), ("cooldown_steps", -1), ("anneal_to", 0.0)])
def test_bad_values_name_the_key(tiny, key, value):
    with pytest.raises(ConfigError, match=rf"strategies\.lr_schedule\.{key}"):
        build(compose(tiny + ["strategy=lr_schedule", f"strategies.lr_schedule.{key}={value}"]))


# -- in a run ----------------------------------------------------------------------------
class LRRecorder(Strategy):
    """Records ``(step, experience, lr)`` of every optimizer step."""

    instances: list = []

    def __init__(self) -> None:
        self.lrs: list[tuple[int, int, float]] = []
        LRRecorder.instances.append(self)

    def after_optimizer_step(self, ctx):
        self.lrs.append((ctx.step, ctx.experience, ctx.module._optimizer.param_groups[0]["lr"]))


def run_recorded(overrides: list[str], boundary_free: bool = False):
    STRATEGIES.register("test_lr_recorder_tmp")(LRRecorder)
    LRRecorder.instances.clear()
    try:
        built = build(compose(overrides + ["strategy=lr_schedule", "+strategies.rec.name=test_lr_recorder_tmp"]))
        built.scenario.stream.boundary_free = boundary_free
        fit(built)
    finally:
        STRATEGIES._items.pop("test_lr_recorder_tmp", None)
    (rec,) = LRRecorder.instances
    return built, rec.lrs


@pytest.mark.parametrize("boundary_free", [False, True])
def test_rewarm_run_lr_follows_the_schedule_and_restarts(tiny, boundary_free):
    built, lrs = run_recorded(tiny + ["strategies.lr_schedule.warmup_fraction=0.2"], boundary_free)
    lr, steps = built.config["train"]["lr"], built.loader.steps_per_experience()
    assert len(lrs) == sum(steps) and len(steps) == 2
    expected = [lr * rewarm_factor(i, n, 0.2) for n in steps for i in range(n)]
    assert [x for _, _, x in lrs] == approx(expected)
    starts = [0, steps[0]]
    for e, s0 in enumerate(starts):
        w = math.floor(0.2 * steps[e] + 0.5)
        assert lrs[s0][2] == 0.0 and lrs[s0 + w][2] == approx(lr)
        assert lrs[s0 + steps[e] - 1][2] == approx(0.1 * lr)


def test_infinite_run_lr_follows_the_schedule_without_rewarm(tiny):
    kw = {"warmup_steps": 4, "cooldown_steps": 10, "constant": 0.2, "cooldown": "inv_sqrt", "anneal_steps": 5,
          "anneal_to": 0.02}
    built, lrs = run_recorded(tiny + ["strategies.lr_schedule.schedule=infinite"]
                              + [f"strategies.lr_schedule.{k}={v}" for k, v in kw.items()])
    lr, total = built.config["train"]["lr"], sum(built.loader.steps_per_experience())
    assert [x for _, _, x in lrs] == approx([lr * infinite_factor(i, total_steps=total, **kw) for i in range(total)])
    first_of_second = next(x for _, e, x in lrs if e == 1)
    assert first_of_second == approx(0.2 * lr)
    assert lrs[-6][2] == approx(0.2 * lr) and lrs[-1][2] == approx(0.02 * lr)


def test_lr_schedule_combines_with_replay(tiny):
    built = build(compose(tiny + ["strategy=[lr_schedule,replay]"]))
    assert list(built.module.strategies) == ["lr_schedule", "replay"]
    assert isinstance(built.module.strategies["lr_schedule"], LRSchedule)
