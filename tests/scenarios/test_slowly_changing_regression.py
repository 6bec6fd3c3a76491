"""Slowly-changing regression: the synthetic bit-flipping stream and a regression run over it."""

from __future__ import annotations

import pytest
import torch
from clframe.scenarios.slowly_changing_regression import LTUTarget, slow_bits, slowly_changing_regression

from clframe.config import compose
from clframe.errors import ConfigError
from clframe.run.runner import build, fit


def test_slow_bits_stay_fixed_within_a_task_and_the_other_bits_are_fresh():
    s = slowly_changing_regression(n_tasks=3, steps_per_task=500, eval_samples=50)
    assert s.stream.boundary_free and s.objective == "regression" and s.n_classes == 1
    for e in s.stream:
        for d in (e.train, e.eval):
            assert torch.equal(d.x[:, :15], e.info["slow_bits"].expand(len(d.x), -1))
            assert set(d.x.unique().tolist()) == {0.0, 1.0}
            assert d.y.dtype == torch.float32 and d.y.shape == (len(d.x),) and d.t.dtype == torch.long
        fast = e.train.x[:, 15:]
        assert 0.4 < fast.mean() < 0.6 and (fast[1:] != fast[:-1]).any(1).float().mean() > 0.9


def test_redraw_and_flip_one_variants():
    g = torch.Generator().manual_seed(0)
    flip = slow_bits(50, 15, "flip_one", g)
    assert ((flip[1:] != flip[:-1]).sum(1) == 1).all()  # exactly one bit flips per task
    redraw = slow_bits(50, 15, "redraw", torch.Generator().manual_seed(0))
    assert (redraw[1:] != redraw[:-1]).sum(1).float().mean() > 5  # about half the bits change


def test_ltu_target_threshold_and_output():
    target = LTUTarget(n_inputs=4, n_features=3, beta=0.7, g=torch.Generator().manual_seed(1))
    assert set(target.w1.unique().tolist()) <= {-1.0, 1.0} and set(target.w2.unique().tolist()) <= {-1.0, 1.0}
    x = torch.randint(0, 2, (64, 4)).float()
    # by hand, unit by unit: fires when w.x + b exceeds beta * (m + 1) - (m - sum(w) + b) / 2
    expected = torch.zeros(64)
    for i in range(3):
        tau = 0.7 * 5 - (4 - target.w1[i].sum() + target.b1[i]) / 2
        expected += target.w2[0, i] * ((x @ target.w1[i] + target.b1[i]) > tau).float()
    assert torch.allclose(target(x), expected + target.b2)


def test_the_target_is_seeded_and_varies_with_the_seed():
    a, b = (slowly_changing_regression(n_tasks=2, steps_per_task=100, seed=s) for s in (0, 0))
    assert torch.equal(a.stream[1].train.y, b.stream[1].train.y)
    c = slowly_changing_regression(n_tasks=2, steps_per_task=100, seed=1)
    assert not torch.equal(a.stream[1].train.x, c.stream[1].train.x)
    assert a.stream[0].train.y.std() > 0  # not a constant target


@pytest.mark.parametrize("kw,match", [({"variant": "flip_all"}, "variant must be one of redraw, flip_one"),
                                      ({"n_slow": 21}, r"n_slow must be in \[0, n_inputs=20\]"),
                                      ({"steps_per_task": 0}, "steps_per_task must be >= 1")])
def test_bad_settings_are_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        slowly_changing_regression(**kw)


def test_a_regression_run_learns_and_reports_online_error():
    built = build(compose(["experiment=slowly_changing_regression", "scenario.n_tasks=2",
                           "scenario.steps_per_task=3000", "logger.progress=false", "checkpoint.enabled=false"]))
    fit(built)
    rows = built.monitor("plasticity").rows
    assert [r["task"] for r in rows] == [0, 1] and "online_acc" not in rows[0]
    assert all(r["online_error"] == pytest.approx(r["online_loss"], rel=1e-5) for r in rows)
    # the score matrix holds minus the squared error; the learner beats predicting the mean target
    data = built.scenario.stream[1].eval
    baseline = ((data.y - data.y.mean()) ** 2).mean().item()
    assert -built.module.acc_matrix[1][1] < baseline


def test_regression_targets_of_the_wrong_shape_are_named():
    from clframe.run.checks import check_scenario

    s = slowly_changing_regression(n_tasks=1, steps_per_task=10, eval_samples=5)
    s.stream[0].train.y = s.stream[0].train.y.long()
    with pytest.raises(ConfigError, match=r"training targets of dtype torch.int64 .* float targets of shape"):
        check_scenario(s)
