"""EMA: the evaluated weights are the running average of the trained ones, the trained model is untouched,
the average lifts min-ACC on an online stream, the snapshot ensemble, resume, refusals."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from clframe.strategies.ema import SnapshotEnsemble
from strategy_helpers import at, interrupted_and_resumed

from clframe.config import compose
from clframe.errors import ConfigError
from clframe.run.runner import build, fit, run

TINY = ["experiment=split_digits", "train.epochs=1", "train.batch_size=10", "logger.progress=false"]


def test_the_evaluated_weights_are_the_running_average_of_the_trained_ones():
    built = build(compose([*TINY, "scenario.n_experiences=2", "strategy=[replay,ema]", "strategies.ema.decay=0.9",
                           "strategies.ema.every=2"]))
    module, ema = built.module, built.module.strategies["ema"]
    expected = [p.detach().clone() for p in module.model.parameters()]  # the copy starts from the initial weights
    after = ema.after_optimizer_step

    def check(ctx):
        after(ctx)
        if (ctx.step + 1) % 2 == 0:
            for e, p in zip(expected, module.model.parameters()):
                e.mul_(0.9).add_(p.detach(), alpha=0.1)
        for e, q in zip(expected, ema.ema.parameters()):
            torch.testing.assert_close(q, e, rtol=0, atol=1e-6)

    ema.after_optimizer_step = check
    fit(built)
    assert module.eval_target() is ema.ema  # what every evaluation sees
    assert any(not torch.equal(p, q) for p, q in zip(module.model.parameters(), ema.ema.parameters()))


def test_the_average_lifts_min_acc_and_flattens_the_gap_on_online_split_digits(tmp_path):
    online = ["experiment=online_split_digits", "logger.progress=false"]  # decay 0.9 there
    replay = run(compose([*online, "strategy=replay"]), tmp_path / "replay")
    with_ema = run(compose([*online, "strategy=[replay,ema]"]), tmp_path / "ema")
    # measured (seed 0): min_acc 0.23 -> 0.78, stability-gap depth 0.44 -> 0.08, final 0.78 -> 0.80
    assert with_ema["min_acc"] > replay["min_acc"] + 0.2
    assert with_ema["stability_gap_depth"] < replay["stability_gap_depth"]


def test_the_snapshot_ensemble_averages_the_experience_end_models():
    built = build(compose([*TINY, "scenario.n_experiences=3", "strategy=ema", "strategies.ema.snapshots=2"]))
    ends = []  # the model at each experience end
    ema = built.module.strategies["ema"]
    end = ema.on_experience_end

    def spy(exp, module):
        end(exp, module)
        ends.append(copy.deepcopy(module.model))

    ema.on_experience_end = spy
    fit(built)
    ensemble = built.module.eval_target()
    assert isinstance(ensemble, SnapshotEnsemble) and len(ensemble.models) == 2  # the last two of three
    x = built.scenario.stream[0].eval.x[:20]
    t = torch.zeros(len(x), dtype=torch.long)
    with torch.no_grad():
        mean = (F.softmax(ends[1](x, t), -1) + F.softmax(ends[2](x, t), -1)) / 2
        torch.testing.assert_close(ensemble(x, t).exp(), mean)


def test_resume_is_bit_identical(tmp_path):
    over = [*TINY, "strategy=[replay,ema]", "strategies.ema.decay=0.9", "scenario.n_experiences=3",
            "checkpoint.every=10", "checkpoint.keep=50"]
    a, b = interrupted_and_resumed(over, tmp_path, at("mid_exp1"))
    for k, v in a["strategies"]["ema"]["ema"].items():
        assert torch.equal(v, b["strategies"]["ema"]["ema"][k]), k


def test_settings_that_make_no_sense_are_refused():
    with pytest.raises(ConfigError, match="ema evaluates a temporal ensemble .* but 'icarl' evaluates a model"):
        fit(build(compose([*TINY, "strategy=[icarl,ema]"])))
    with pytest.raises(ConfigError, match=r"strategy 'ema' needs the experience boundaries: with snapshots > 0"):
        fit(build(compose([*TINY, "strategy=ema", "strategies.ema.snapshots=2", "scenario.boundaries=hidden"])))
    with pytest.raises(ConfigError, match="decay"):
        build(compose([*TINY, "strategy=ema", "strategies.ema.decay=1.0"]))
