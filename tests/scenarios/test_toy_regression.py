"""The 1-D toy regression of von Oswald et al. 2020: three polynomials on disjoint intervals."""

from __future__ import annotations

import pytest
import torch
from clframe.scenarios.toy_regression import toy_functions, toy_regression

from clframe.config import compose
from clframe.config.registry import SCENARIOS
from clframe.errors import ConfigError
from clframe.run.runner import build

DOMAINS = [(-4.0, -2.0), (-1.0, 1.0), (2.0, 4.0)]


def test_three_task_incremental_experiences_of_one_dimensional_regression():
    s = toy_regression()
    assert s.objective == "regression" and s.n_classes == 1 and s.input_shape == (1,) and s.n_tasks == 3
    assert not s.stream.boundary_free
    assert [e.task_label for e in s.stream] == [0, 1, 2] and [e.index for e in s.stream] == [0, 1, 2]
    for i, e in enumerate(s.stream):
        assert e.classes_in_this_experience == [0]
        assert (len(e.train), len(e.eval)) == (100, 50)
        for d in (e.train, e.eval):
            assert d.x.shape == (len(d), 1) and d.y.shape == (len(d), 1)
            assert d.x.dtype == d.y.dtype == torch.float32 and d.t.dtype == torch.long
            assert (d.t == i).all()


def test_the_ground_truths_are_the_papers_functions():
    x = torch.tensor([[-1.0], [0.0], [0.5], [3.0]])
    (f0, d0), (f1, d1), (f2, d2) = toy_functions()
    assert [d0, d1, d2] == DOMAINS
    assert torch.equal(f0(x), x + 3) and torch.equal(f1(x), 2 * x**2 - 1) and torch.equal(f2(x), (x - 3) ** 3)


@pytest.mark.parametrize("task", [0, 1, 2])
def test_inputs_lie_in_the_domain_and_eval_targets_are_the_true_function(task):
    e = toy_regression(n_train=500, n_eval=21).stream[task]
    f, (lo, hi) = toy_functions()[task]
    assert lo <= e.train.x.min() and e.train.x.max() <= hi
    assert e.train.x.max() - e.train.x.min() > 0.9 * (hi - lo)  # spread over the domain, not a corner of it
    assert torch.equal(e.eval.x.squeeze(1), torch.linspace(lo, hi, 21))  # evenly spaced, both ends included
    assert torch.equal(e.eval.y, f(e.eval.x))  # noise-free


@pytest.mark.parametrize("noise", [0.0, 0.05, 0.3])
def test_training_targets_carry_noise_of_the_given_std(noise):
    s = toy_regression(n_train=2000, noise=noise)
    for e, (f, _) in zip(s.stream, toy_functions()):
        residual = e.train.y - f(e.train.x)
        if noise == 0:
            assert torch.equal(residual, torch.zeros_like(residual))
        else:
            assert residual.std().item() == pytest.approx(noise, rel=0.15)
            assert abs(residual.mean().item()) < 0.2 * noise


def test_the_data_is_seeded():
    a, b, c = toy_regression(seed=0), toy_regression(seed=0), toy_regression(seed=1)
    for ea, eb, ec in zip(a.stream, b.stream, c.stream):
        assert torch.equal(ea.train.x, eb.train.x) and torch.equal(ea.train.y, eb.train.y)
        assert not torch.equal(ea.train.x, ec.train.x) and not torch.equal(ea.train.y, ec.train.y)
        assert torch.equal(ea.eval.y, ec.eval.y)  # the eval grid does not depend on the seed


def test_fewer_tasks_keep_the_first_ones():
    s = toy_regression(n_tasks=2)
    assert len(s.stream) == 2 and s.n_tasks == 2
    full = toy_regression()
    assert all(torch.equal(a.train.y, b.train.y) for a, b in zip(s.stream, full.stream))


@pytest.mark.parametrize("params,match", [
    ({"n_tasks": 4}, r"'scenario.n_tasks' must be in \[1, 3\], got 4"),
    ({"n_tasks": 0}, r"'scenario.n_tasks' must be in \[1, 3\], got 0"),
    ({"n_train": 0}, r"'scenario.n_train' must be >= 1"),
    ({"n_eval": 0}, r"'scenario.n_eval' must be >= 1"),
    ({"noise": -0.1}, r"'scenario.noise' must be >= 0"),
    ({"n_train": 2.5}, r"'scenario.n_train' must be int"),
])
def test_bad_settings_are_config_errors_naming_the_key(params, match):
    with pytest.raises(ConfigError, match=match):
        SCENARIOS.build("toy_regression", params)


def test_it_builds_through_the_registry_with_its_defaults():
    s = SCENARIOS.build("toy_regression", {})
    assert len(s.stream) == 3 and s.n_tasks == 3 and s.objective == "regression"
    assert list(SCENARIOS.params("toy_regression")) == ["n_tasks", "n_train", "n_eval", "noise", "seed"]


def test_a_multihead_model_builds_and_predicts_one_unmasked_value_per_task():
    built = build(compose(["scenario=toy_regression", "head=multihead", "logger.progress=false",
                           "checkpoint.enabled=false"]))
    assert built.scenario.n_tasks == 3
    e = built.scenario.stream[2]
    with torch.no_grad():
        out = built.module(e.eval.x, e.eval.t)
    assert out.shape == (50, 1) and out.abs().max() < 1e3  # not masked to the dtype's minimum
