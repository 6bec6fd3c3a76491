"""CLModule: strategy hook dispatch, loss terms, optimizer handling and boundary evaluation."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clframe.config import compose
from clframe.core.hooks import Plugin
from clframe.core.module import CLModule
from clframe.core.objectives import task_loss
from clframe.core.strategy import Strategy
from clframe.run.runner import Built, build, fit, run

STEP_HOOKS = ("before_forward", "loss_terms", "before_optimizer_step", "lr_factor", "after_optimizer_step")


def with_strategies(overrides: list[str], strategies: dict[str, Strategy]) -> Built:
    """Build from a config, then swap in a module that dispatches to ``strategies``."""
    built = build(compose(overrides))
    m, tr = built.module, built.config["train"]
    module = CLModule(
        m.model, strategies, built.scenario.stream, built.loader.steps_per_experience(),
        optimizer=tr["optimizer"], lr=tr["lr"], momentum=tr["momentum"], weight_decay=tr["weight_decay"],
        reset_optimizer=tr["reset_optimizer"], eval_batch_size=built.config["eval"]["batch_size"],
        log_every=built.config["logger"]["log_every"],
    )
    return Built(built.config, built.scenario, module, built.loader)


class Recorder(Strategy):
    """Appends ``(hook, experience, step)`` for every hook call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.module: CLModule | None = None

    def _rec(self, hook: str, exp: int, step: int) -> None:
        self.calls.append((hook, exp, step))

    def setup(self, module):
        self.module = module
        self._rec("setup", module.current_exp, module.cl_step)

    def on_experience_start(self, exp, module):
        self._rec("on_experience_start", exp.index, module.cl_step)

    def before_forward(self, batch, module):
        self._rec("before_forward", module.current_exp, module.cl_step)
        return batch

    def loss_terms(self, ctx):
        self._rec("loss_terms", ctx.experience, ctx.step)
        return {}

    def before_optimizer_step(self, ctx):
        self._rec("before_optimizer_step", ctx.experience, ctx.step)

    def lr_factor(self, step, experience, step_in_experience, experience_steps):
        self._rec("lr_factor", experience, step)
        return None

    def after_optimizer_step(self, ctx):
        self._rec("after_optimizer_step", ctx.experience, ctx.step)

    def on_experience_end(self, exp, module):
        self._rec("on_experience_end", exp.index, module.cl_step)

    def configure_optimizer(self, params):
        self._rec("configure_optimizer", -1, 0)
        return None

    def names(self, hook: str | None = None) -> list[str]:
        return [c[0] for c in self.calls if hook is None or c[0] == hook]


# -- hook order ----------------------------------------------------------------
@pytest.mark.parametrize("engine", ["trainer", "fabric"])
def test_hook_order_and_counts(tiny, engine):
    rec = Recorder()
    built = with_strategies(tiny + [f"trainer.engine={engine}"], {"rec": rec})
    steps = built.loader.steps_per_experience()
    T = len(steps)
    assert T == 2
    fit(built)
    calls, names = rec.calls, rec.names()

    assert names.count("setup") == 1
    assert names.count("configure_optimizer") == 1
    first_train_hook = min(i for i, n in enumerate(names) if n not in ("setup", "configure_optimizer"))
    assert names.index("setup") < first_train_hook
    assert names.count("on_experience_start") == T
    assert names.count("on_experience_end") == T
    for hook in STEP_HOOKS:
        assert names.count(hook) == sum(steps), hook
        per_exp = [sum(1 for c in calls if c[0] == hook and c[1] == e) for e in range(T)]
        assert per_exp == steps, hook

    for e in range(T):
        idx = [i for i, c in enumerate(calls) if c[1] == e and c[0] in STEP_HOOKS]
        start = next(i for i, c in enumerate(calls) if c[:2] == ("on_experience_start", e))
        end = next(i for i, c in enumerate(calls) if c[:2] == ("on_experience_end", e))
        assert start < min(idx) and max(idx) < end
        if e > 0:  # experiences do not overlap
            prev_end = next(i for i, c in enumerate(calls) if c[:2] == ("on_experience_end", e - 1))
            assert prev_end < start

    # within each step: before_forward < loss_terms < before_optimizer_step < lr_factor < after_optimizer_step
    step_calls = [c for c in calls if c[0] in STEP_HOOKS]
    for s in range(sum(steps)):
        chunk = step_calls[s * len(STEP_HOOKS):(s + 1) * len(STEP_HOOKS)]
        assert [c[0] for c in chunk] == list(STEP_HOOKS)
        # every hook of the step sees the same global step; it counts up by one per optimizer step
        assert [c[2] for c in chunk] == [s] * len(STEP_HOOKS)
    assert built.module.cl_step == sum(steps)
    assert len(built.module.acc_matrix) == T


def test_lr_factor_receives_step_in_experience(tiny):
    seen = []

    class Probe(Strategy):
        def lr_factor(self, step, experience, step_in_experience, experience_steps):
            seen.append((step, experience, step_in_experience, experience_steps))

    built = with_strategies(tiny, {"p": Probe()})
    steps = built.loader.steps_per_experience()
    fit(built)
    expected = [(sum(steps[:e]) + i, e, i, steps[e]) for e in range(len(steps)) for i in range(steps[e])]
    assert seen == expected


def test_boundary_free_stream_gets_no_experience_hooks_but_an_acc_matrix(tiny):
    rec = Recorder()
    built = with_strategies(tiny, {"rec": rec})
    built.scenario.stream.boundary_free = True
    fit(built)
    names = rec.names()
    assert "on_experience_start" not in names and "on_experience_end" not in names
    assert names.count("before_forward") == sum(built.loader.steps_per_experience())
    R = built.module.acc_matrix
    assert len(R) == 2 and all(len(row) == 2 for row in R)


def test_strategies_are_dispatched_in_config_order(tiny):
    order = []

    class Tag(Strategy):
        def __init__(self, name):
            self.name = name

        def before_forward(self, batch, module):
            order.append(self.name)
            return batch

    built = with_strategies(tiny, {"b": Tag("b"), "a": Tag("a"), "c": Tag("c")})
    fit(built)
    assert order[:6] == ["b", "a", "c"] * 2


def test_registered_strategy_is_built_from_config(tiny):
    from clframe.config.registry import STRATEGIES

    class Registered(Recorder):
        instances: list = []

        def __init__(self, tag: str = "x") -> None:
            super().__init__()
            self.tag = tag
            Registered.instances.append(self)

    STRATEGIES.register("test_recorder_tmp")(Registered)
    try:
        built = build(compose(tiny + ["+strategies.rec.name=test_recorder_tmp", "+strategies.rec.tag=y"]))
        fit(built)
    finally:
        STRATEGIES._items.pop("test_recorder_tmp", None)
    (rec,) = Registered.instances
    assert rec.tag == "y" and list(built.module.strategies) == ["naive", "rec"]
    assert len(rec.names("before_forward")) == built.module.cl_step


# -- loss terms ------------------------------------------------------------------
class ConstTerm(Strategy):
    """A loss term worth exactly ``value`` whose gradient is ``c`` on the head bias of class 0;
    checks the gradient that reaches the optimizer against a hand computation."""

    def __init__(self, value: float = 7.0, c: float = 3.0) -> None:
        self.value, self.c = value, c
        self.max_err = 0.0
        self.checked = 0

    def loss_terms(self, ctx):
        b = ctx.module.head.fc.bias
        return {"const": self.value + self.c * (b - b.detach())[0]}

    def before_optimizer_step(self, ctx):
        m, batch = ctx.module, ctx.batch
        b = m.head.fc.bias
        with torch.enable_grad():
            (g_task,) = torch.autograd.grad(F.cross_entropy(m(batch.x, batch.t), batch.y), b)
        expected = g_task.clone()
        expected[0] += self.c
        self.max_err = max(self.max_err, (b.grad - expected).abs().max().item())
        self.checked += 1


def test_loss_terms_are_added_to_the_loss_and_logged(tiny):
    term = ConstTerm()
    built = with_strategies(tiny, {"const": term})
    fit(built)
    assert term.checked == built.module.cl_step
    assert term.max_err < 1e-5  # grad = d(task)/dp + d(term)/dp

    log = built.module.loss_log
    assert log, "losses were never flushed"
    for entry in log:
        assert entry["loss/const"] == pytest.approx(7.0)
        assert entry["loss/task"] > 0
    assert [e["experience"] for e in log] == [0, 1]


def test_loss_term_changes_training(tiny):
    base = with_strategies(tiny, {})
    fit(base)
    pushed = with_strategies(tiny, {"const": ConstTerm(c=-50.0)})
    fit(pushed)
    b0, b1 = base.module.head.fc.bias.detach(), pushed.module.head.fc.bias.detach()
    # a constant gradient of -50 on the class-0 bias, lr 0.05, 44 steps: pushed up by ~110
    assert (b1 - b0)[0] > 50
    assert base.module.acc_matrix != pushed.module.acc_matrix


def test_same_named_loss_terms_of_two_strategies_are_both_added(tiny):
    class Checker(Strategy):
        def __init__(self):
            self.errors = []

        def before_optimizer_step(self, ctx):
            m, batch = ctx.module, ctx.batch
            b = m.head.fc.bias
            with torch.enable_grad():
                (g_task,) = torch.autograd.grad(F.cross_entropy(m(batch.x, batch.t), batch.y), b)
            self.errors.append((b.grad[0] - g_task[0] - (1.0 + 2.0)).abs().item())

    checker = Checker()
    built = with_strategies(tiny, {"a": ConstTerm(c=1.0), "b": ConstTerm(c=2.0), "check": checker})
    fit(built)
    assert max(checker.errors) < 1e-5


def test_task_loss_weighted_is_sum_of_weighted_ce():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    w = torch.rand(6)
    ce = F.cross_entropy(logits, y, reduction="none")
    assert task_loss(logits, y).item() == pytest.approx(ce.mean().item(), rel=1e-6)
    assert task_loss(logits, y, w).item() == pytest.approx((w * ce).sum().item(), rel=1e-6)


def test_losses_are_flushed_every_log_every_steps(tiny):
    built = build(compose(tiny + ["logger.log_every=5"]))
    steps = built.loader.steps_per_experience()
    fit(built)
    log = built.module.loss_log
    # windows end every 5 steps and at each experience end
    for e, n in enumerate(steps):
        ends = [entry["step"] for entry in log if entry["experience"] == e]
        start = sum(steps[:e])
        assert ends == [start + k for k in range(5, n + 1, 5)] + ([start + n] if n % 5 else [])


# -- optimizer -------------------------------------------------------------------
class OptProbe(Strategy):
    """Snapshots optimizer state at each experience start."""

    def __init__(self) -> None:
        self.states: list[dict] = []
        self.steps: list[int] = []

    def on_experience_start(self, exp, module):
        opt = module._optimizer
        self.states.append({k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()}
                            for k, s in opt.state.items()})

    def after_optimizer_step(self, ctx):
        self.steps.append(ctx.step)


def _adam_step(module) -> float:
    p = module.head.fc.weight
    return float(module._optimizer.state[p]["step"])


@pytest.mark.parametrize("reset", [False, True])
def test_adam_state_persists_across_experiences_unless_reset(tiny, reset):
    probe = OptProbe()
    built = with_strategies(tiny + ["train.optimizer=adam", "train.lr=0.001", f"train.reset_optimizer={reset}"],
                            {"p": probe})
    steps = built.loader.steps_per_experience()
    fit(built)
    assert len(probe.states) == 2
    assert probe.states[0] == {}
    if reset:
        assert probe.states[1] == {}
        assert _adam_step(built.module) == steps[-1]
    else:
        p = built.module.head.fc.weight
        assert float(probe.states[1][p]["step"]) == steps[0]
        assert _adam_step(built.module) == sum(steps)
    # the global step never restarts
    assert probe.steps == list(range(sum(steps)))
    assert built.module.cl_step == sum(steps)


@pytest.mark.parametrize("reset", [False, True])
def test_sgd_momentum_buffer_persists_unless_reset(tiny, reset):
    probe = OptProbe()
    built = with_strategies(tiny + ["train.momentum=0.9", f"train.reset_optimizer={reset}"], {"p": probe})
    fit(built)
    p = built.module.head.fc.weight
    if reset:
        assert probe.states[1] == {}
    else:
        buf = probe.states[1][p]["momentum_buffer"]
        assert buf.shape == p.shape and buf.abs().sum() > 0
    assert "momentum_buffer" in built.module._optimizer.state[p]


def test_reset_optimizer_changes_training(tiny):
    runs = []
    for reset in (False, True):
        built = build(compose(tiny + ["train.momentum=0.9", f"train.reset_optimizer={reset}"]))
        fit(built)
        runs.append(built.module)
    assert runs[0].acc_matrix[0] == runs[1].acc_matrix[0]  # identical through experience 0
    assert not torch.equal(runs[0].head.fc.weight, runs[1].head.fc.weight)


class LrProbe(Strategy):
    """Multiplies the lr by ``factors[experience]`` and measures the lr each SGD step used."""

    def __init__(self, factors) -> None:
        self.factors = factors
        self.used: list[tuple[int, float]] = []

    def lr_factor(self, step, experience, step_in_experience, experience_steps):
        return self.factors[experience]

    def before_optimizer_step(self, ctx):
        p = ctx.module.head.fc.bias
        self._before, self._grad = p.detach().clone(), p.grad.detach().clone()

    def after_optimizer_step(self, ctx):
        p = ctx.module.head.fc.bias.detach()
        i = self._grad.abs().argmax()
        self.used.append((ctx.experience, ((self._before - p)[i] / self._grad[i]).item()))


def test_lr_factor_sets_the_lr_actually_used(tiny):
    probe = LrProbe([1.0, 0.25])
    built = with_strategies(tiny, {"lr": probe})  # sgd, lr 0.05, no momentum
    fit(built)
    for exp, lr in probe.used:
        assert lr == pytest.approx(0.05 * probe.factors[exp], rel=1e-3)
    assert built.module._optimizer.param_groups[0]["initial_lr"] == 0.05


def test_lr_factor_zero_freezes_the_model(tiny):
    built = with_strategies(tiny, {"lr": LrProbe([1.0, 0.0])})
    fit(built)
    R = built.module.acc_matrix
    assert R[1] == R[0]  # nothing moved during experience 1


def test_lr_factors_of_several_strategies_multiply(tiny):
    probe = LrProbe([0.5, 0.5])

    class Half(Strategy):
        def lr_factor(self, step, experience, step_in_experience, experience_steps):
            return 0.5

    built = with_strategies(tiny, {"lr": probe, "half": Half()})
    fit(built)
    assert all(lr == pytest.approx(0.05 * 0.25, rel=1e-3) for _, lr in probe.used)


def test_configure_optimizer_replaces_the_optimizer(tiny):
    made = []

    class Frozen(Strategy):
        def configure_optimizer(self, params):
            made.append(torch.optim.SGD(params, lr=0.0))
            return made[-1]

    built = with_strategies(tiny, {"f": Frozen()})
    before = {k: v.clone() for k, v in built.module.state_dict().items()}
    fit(built)
    assert built.module._optimizer is made[0]
    for k, v in built.module.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert built.module.acc_matrix[0] == built.module.acc_matrix[1]


def test_two_strategies_providing_an_optimizer_is_an_error(tiny):
    class Provides(Strategy):
        def configure_optimizer(self, params):
            return torch.optim.SGD(params, lr=0.1)

    built = with_strategies(tiny, {"a": Provides(), "b": Provides()})
    with pytest.raises(ValueError, match="more than one strategy"):
        built.module.configure_optimizers()


# -- evaluation ------------------------------------------------------------------
class AlwaysZero(nn.Module):
    def forward(self, x, t):
        logits = torch.zeros(len(x), 10, device=x.device)
        logits[:, 0] = 1.0
        return logits


def test_eval_model_replaces_the_evaluated_model(tiny):
    class EvalZero(Strategy):
        def eval_model(self, module):
            return AlwaysZero()

    built = with_strategies(tiny, {"z": EvalZero()})
    fit(built)
    expected = [(e.eval.y == 0).float().mean().item() for e in built.scenario.stream]
    assert expected[0] > 0 and expected[1] == 0
    for row in built.module.acc_matrix:
        assert row == pytest.approx(expected)


def test_first_eval_model_wins_and_none_falls_back(tiny):
    class NoOpinion(Strategy):
        def eval_model(self, module):
            return None

    class EvalZero(Strategy):
        def eval_model(self, module):
            return AlwaysZero()

    built = with_strategies(tiny, {"a": NoOpinion(), "z": EvalZero()})
    assert isinstance(built.module.eval_target(), AlwaysZero)
    plain = with_strategies(tiny, {"a": NoOpinion()}).module
    assert plain.eval_target() is plain


def test_acc_matrix_row_i_is_recorded_after_experience_i(tiny):
    built = build(compose(tiny))
    module, steps = built.module, built.loader.steps_per_experience()
    events = []

    class Listener(Plugin):
        def on_boundary_eval(self, m, experience, rows):
            # recompute the row by hand, at the moment it is recorded
            with torch.no_grad():
                accs = [(m(e.eval.x, e.eval.t).argmax(-1) == e.eval.y).float().mean().item() for e in m.stream]
            events.append((experience, m.cl_step, accs, [r["acc"] for r in rows]))

    module.set_plugins([Listener()])
    fit(built)
    R = module.acc_matrix
    assert len(R) == 2 and all(len(r) == 2 for r in R)
    assert [e[0] for e in events] == [0, 1]
    assert [e[1] for e in events] == [steps[0], steps[0] + steps[1]]
    for i, (_, _, by_hand, logged) in enumerate(events):
        assert logged == R[i]
        assert R[i] == pytest.approx(by_hand, abs=1e-6)
    # after the first experience, nothing of the unseen classes is predicted (split digits, class-incremental)
    assert R[0][1] == 0.0
    assert module.training  # evaluation restores train mode


def test_empty_last_experience_still_gets_a_row(tiny):
    from clframe.data.iterator import StreamIterator

    built = build(compose(tiny + ["scenario.n_experiences=3"]))
    stream = built.scenario.stream
    stream[2].train = stream[2].train.subset(torch.zeros(len(stream[2].train), dtype=torch.bool))
    loader = StreamIterator(stream, 32)
    assert loader.steps_per_experience()[2] == 0
    m = built.module
    module = CLModule(m.model, {}, stream, loader.steps_per_experience())
    fit(Built(built.config, built.scenario, module, loader))
    assert len(module.acc_matrix) == 3


def test_metrics_csv_matches_acc_matrix(tiny, tmp_path):
    summary = run(compose(tiny), tmp_path)
    R = summary["acc_matrix"]
    with open(tmp_path / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "boundary"]
    assert len(rows) == len(R) ** 2
    for r in rows:
        assert float(r["acc"]) == pytest.approx(R[int(r["experience"])][int(r["eval_experience"])])
    assert json.loads((tmp_path / "summary.json").read_text())["acc_matrix"] == R


# -- multihead ---------------------------------------------------------------------
def test_multihead_masks_classes_outside_the_task(tiny):
    built = build(compose(tiny + ["head=multihead", "scenario.task_incremental=true"]))
    module = built.module
    stream = built.scenario.stream
    assert [e.task_label for e in stream] == [0, 1]
    for e in stream:
        mask = module.head.class_mask[e.task_label]
        assert mask.nonzero().flatten().tolist() == e.classes_in_this_experience

    torch.manual_seed(0)
    x = torch.randn(64, 1, 8, 8) * 5
    for e in stream:
        t = torch.full((64,), e.task_label)
        with torch.no_grad():
            logits = module(x, t)
        preds = logits.argmax(-1)
        assert set(preds.tolist()) <= set(e.classes_in_this_experience)
        outside = [c for c in range(10) if c not in e.classes_in_this_experience]
        assert (logits[:, outside] == torch.finfo(logits.dtype).min).all()
        assert torch.isfinite(F.cross_entropy(logits, t * 5)).item()

    fit(built)
    R = built.module.acc_matrix
    # with the task label picking among 5 classes, even the untrained task scores above 0 (0 in class-IL)
    assert len(R) == 2 and R[0][1] > 0 and R[1][1] > 0.2
