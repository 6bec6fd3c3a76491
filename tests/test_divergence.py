"""A NaN/inf loss term or parameter stops the run with ``DivergenceError``: it names the term,
the step, the experience and the last good checkpoint, and no checkpoint ever holds a
diverged state."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from clframe.checkpoint.files import checkpoint_dir, checkpoint_name, list_checkpoints, load_checkpoint
from clframe.config import compose
from clframe.config.registry import STRATEGIES
from clframe.core.strategy import Strategy
from clframe.errors import DivergenceError
from clframe.run.runner import run

# the conftest's ``tiny`` overrides: 2 experiences of 22 steps each (steps 1-22 and 23-44)
TINY = ["scenario.n_experiences=2", "backbone.hidden=[32]", "train.epochs=1", "logger.progress=false"]


class NaNAt(Strategy):
    """Adds a loss term ``term`` that is 0 until the optimizer step with index ``at`` (0-based,
    ``ctx.step``), and NaN from then on. That step is step ``at + 1`` in the run's counting
    (``cl_step`` after the step, as in metrics.csv and checkpoint names)."""

    def __init__(self, at: int = 0, term: str = "bad") -> None:  # ("name" is the strategy's own name)
        self.at, self.term = at, term

    def loss_terms(self, ctx):
        zero = ctx.loss * 0.0
        return {self.term: zero + float("nan") if ctx.step >= self.at else zero}


class BreakWeightAt(Strategy):
    """Sets one head bias to inf right after optimizer step index ``at``; the losses stay finite."""

    def __init__(self, at: int = 0) -> None:
        self.at = at

    def after_optimizer_step(self, ctx):
        if ctx.step == self.at:
            with torch.no_grad():
                ctx.module.head.fc.bias[0] = float("inf")


@pytest.fixture(autouse=True)
def test_strategies(monkeypatch):
    STRATEGIES.names()  # load the built-ins first
    monkeypatch.setitem(STRATEGIES._items, "nan_at", NaNAt)
    monkeypatch.setitem(STRATEGIES._items, "break_weight_at", BreakWeightAt)


LAST_GOOD = re.compile(r"The last good checkpoint is (\S+\.ckpt)\.")


def diverge(overrides: list[str], run_dir: Path) -> str:
    with pytest.raises(DivergenceError) as e:
        run(compose(TINY + overrides), run_dir)
    assert not (run_dir / "summary.json").exists()
    return str(e.value)


def assert_finite_checkpoint(path: Path, step: int) -> dict:
    state = load_checkpoint(path)
    assert state["step"] == step and state["finished"] is False
    tensors = list(state["module"]["model"].values())
    for group in state["module"]["optimizer"]["state"].values():
        tensors += [v for v in group.values() if isinstance(v, torch.Tensor)]
    assert tensors and all(torch.isfinite(t).all() for t in tensors)
    for _, _, terms in state["module"]["pending_losses"]:
        assert all(math.isfinite(v.item()) for v in terms.values())
    return state


def assert_no_checkpoint_after(run_dir: Path, step: int) -> None:
    assert max(s for s, _ in list_checkpoints(run_dir)) == step
    assert not list(checkpoint_dir(run_dir).glob(".*.tmp"))


@pytest.mark.parametrize("engine", ["trainer", "fabric"])
def test_nan_term_is_reported_at_its_exact_step_with_the_last_good_checkpoint(tmp_path, engine):
    msg = diverge(["+strategies.nan_at={at: 30}", "logger.log_every=1", "checkpoint.every=7",
                   f"trainer.engine={engine}"], tmp_path)
    assert "loss term 'bad' was nan at step 31 (experience 1)" in msg
    last = Path(LAST_GOOD.search(msg).group(1))
    assert last == checkpoint_dir(tmp_path) / checkpoint_name(28)
    assert_finite_checkpoint(last, 28)
    assert_no_checkpoint_after(tmp_path, 28)
    assert "Lower the learning rate" in msg


def test_nan_term_in_the_first_experience(tmp_path):
    msg = diverge(["+strategies.nan_at={at: 9, term: exploding}", "logger.log_every=1", "checkpoint.every=4"],
                  tmp_path)
    assert "loss term 'exploding' was nan at step 10 (experience 0)" in msg
    assert_finite_checkpoint(Path(LAST_GOOD.search(msg).group(1)), 8)


def test_the_step_is_exact_even_when_found_between_log_syncs(tmp_path):
    # log_every=50: the NaN of step 31 is found when the checkpoint of step 35 checks the
    # pending loss terms; that checkpoint is refused and the step reported is still 31
    msg = diverge(["+strategies.nan_at={at: 30}", "checkpoint.every=7"], tmp_path)
    assert "loss term 'bad' was nan at step 31 (experience 1)" in msg
    last = Path(LAST_GOOD.search(msg).group(1))
    assert last == checkpoint_dir(tmp_path) / checkpoint_name(28)
    assert_finite_checkpoint(last, 28)
    assert_no_checkpoint_after(tmp_path, 28)


def test_an_experience_end_checkpoint_is_refused_after_a_nan(tmp_path):
    # no periodic checkpoints: the NaN of step 5 is found at the end of experience 0, whose
    # checkpoint is never written
    msg = diverge(["+strategies.nan_at={at: 4}", "checkpoint.every=null"], tmp_path)
    assert "loss term 'bad' was nan at step 5 (experience 0)" in msg
    assert "No checkpoint was written before it." in msg
    assert not list_checkpoints(tmp_path)


def test_a_parameter_that_becomes_inf_is_named(tmp_path):
    msg = diverge(["+strategies.break_weight_at={at: 12}", "logger.log_every=1", "checkpoint.every=5"],
                  tmp_path)
    assert "parameter 'head.fc.bias' is NaN or infinite at step 13 (experience 0)" in msg
    assert_finite_checkpoint(Path(LAST_GOOD.search(msg).group(1)), 10)


def test_huge_learning_rate_diverges(tmp_path):
    msg = diverge(["train.lr=1e20", "train.momentum=0.9", "logger.log_every=1", "checkpoint.every=1"], tmp_path)
    assert msg.startswith("Training diverged: ")
    assert re.search(r"(loss term 'task' was nan|parameter '[\w.]+' is NaN or infinite) at step \d+ "
                     r"\(experience 0\)", msg), msg
    step = int(re.search(r"at step (\d+)", msg).group(1))
    last = Path(LAST_GOOD.search(msg).group(1))
    assert last == checkpoint_dir(tmp_path) / checkpoint_name(step - 1)
    assert_finite_checkpoint(last, step - 1)
    assert_no_checkpoint_after(tmp_path, step - 1)


def test_huge_learning_rate_without_a_checkpoint(tmp_path):
    msg = diverge(["train.lr=1e20", "train.momentum=0.9", "logger.log_every=1"], tmp_path)
    assert "No checkpoint was written before it." in msg and "last good checkpoint" not in msg
    assert not list_checkpoints(tmp_path)


def test_resuming_from_the_last_good_checkpoint_names_it_again(tmp_path):
    over = ["+strategies.nan_at={at: 30}", "logger.log_every=1", "checkpoint.every=7"]
    first = diverge(over, tmp_path)
    last = LAST_GOOD.search(first).group(1)
    # the same run resumed diverges at the same step, before writing any checkpoint of its own
    again = diverge(over + [f"resume={tmp_path}"], tmp_path / "unused")
    assert "loss term 'bad' was nan at step 31 (experience 1)" in again
    assert LAST_GOOD.search(again).group(1) == last
    assert_no_checkpoint_after(tmp_path, 28)
