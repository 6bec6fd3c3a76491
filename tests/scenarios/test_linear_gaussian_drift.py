"""Linear-Gaussian drift: the state-space model of a Kalman-filter head, as a regression stream."""

from __future__ import annotations

import inspect

import pytest
import torch
from clframe.scenarios.linear_gaussian_drift import CHUNK, drift_weights, linear_gaussian_drift
from omegaconf import OmegaConf

from clframe.config import compose, validate
from clframe.config.defaults import SCENARIO_COMMON
from clframe.config.registry import SCENARIOS, ParamError
from clframe.errors import ConfigError
from clframe.run.checks import check_scenario

SMALL = {"n_segments": 3, "samples_per_segment": 700, "eval_samples": 50}


def lag1(w: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Least-squares slope of ``W_n`` on ``W_{n-1}`` (all entries pooled) and the residuals."""
    a, b = w[:-1].double(), w[1:].double()
    slope = float((a * b).sum() / (a * a).sum())
    return slope, b - slope * a


def test_shapes_dtypes_and_stream_flags():
    s = linear_gaussian_drift(n_features=5, n_outputs=3, **SMALL)
    assert s.objective == "regression" and s.n_classes == 3 and s.input_shape == (5,) and s.n_tasks == 1
    assert s.stream.boundary_free and s.stream.ordered and len(s.stream) == 3
    for i, e in enumerate(s.stream):
        assert e.index == i and e.task_label == 0 and e.classes_in_this_experience == [0, 1, 2]
        assert (len(e.train), len(e.eval)) == (700, 50)
        for d in (e.train, e.eval):
            assert d.x.shape == (len(d), 5) and d.y.shape == (len(d), 3)
            assert d.x.dtype == d.y.dtype == torch.float32 and d.t.dtype == torch.long and (d.t == 0).all()
        assert e.info["gamma"] == 0.99 and e.info["reset_step"] == 700 * i
        assert e.info["final_weights"].shape == (3, 5)
    check_scenario(s)


def test_one_output_still_has_two_dimensional_targets():
    e = linear_gaussian_drift(**SMALL).stream[0]
    assert e.train.y.shape == (700, 1) and e.eval.y.shape == (50, 1)


def test_deterministic_for_a_seed_and_different_for_another():
    a, b, c = (linear_gaussian_drift(**SMALL, seed=s) for s in (0, 0, 1))
    for ea, eb, ec in zip(a.stream, b.stream, c.stream):
        for split in ("train", "eval"):
            da, db, dc = getattr(ea, split), getattr(eb, split), getattr(ec, split)
            assert torch.equal(da.x, db.x) and torch.equal(da.y, db.y)
            assert not torch.equal(da.x, dc.x) and not torch.equal(da.y, dc.y)
        assert torch.equal(ea.info["final_weights"], eb.info["final_weights"])


def test_drift_weights_are_ar1_with_the_given_autocorrelation_and_stationary_variance():
    w = drift_weights(200_000, 2, 8, 0.9, 2.0, torch.Generator().manual_seed(0))
    assert w.shape == (200_000, 2, 8) and w.dtype == torch.float32
    slope, resid = lag1(w)
    assert slope == pytest.approx(0.9, abs=0.005)
    assert w.var().item() == pytest.approx(4.0, rel=0.05)  # marginal variance prior_std^2, from the start
    assert w[0].abs().mean() > 0.5  # W_0 is a draw from the prior, not zero
    innovation_var = (1 - 0.9**2) * 4.0
    assert resid.var().item() == pytest.approx(innovation_var, rel=0.02)
    # the chunked solve is the recursion at every position in a chunk: the same slope and innovation
    # variance where the state is carried from one chunk to the next as further in
    n = (len(w) - 1) // CHUNK * CHUNK
    a, b = (v[:n].double().view(-1, CHUNK, 16).transpose(0, 1).flatten(1) for v in (w[:-1], w[1:]))
    slopes = (a * b).sum(1) / (a * a).sum(1)
    assert torch.allclose(slopes, torch.full_like(slopes, 0.9), atol=0.02)
    by_position = (b - 0.9 * a).var(1)
    assert torch.allclose(by_position, torch.full_like(by_position, innovation_var), rtol=0.1)
    # the innovations are white: the residuals are uncorrelated with the previous weights
    assert abs(float((resid * w[:-1].double()).mean())) < 0.02


def test_gamma_one_keeps_the_weights_fixed_within_a_segment():
    w = drift_weights(3 * CHUNK + 5, 2, 4, 1.0, 1.0, torch.Generator().manual_seed(0))
    assert torch.allclose(w, w[:1].expand_as(w))


def test_targets_have_noise_of_the_given_std_around_the_true_weights():
    # gamma=1: the segment's weights are its final weights at every step, so y - W phi is the noise
    s = linear_gaussian_drift(gamma=1.0, noise_std=0.3, n_segments=2, samples_per_segment=20_000,
                              eval_samples=20_000)
    for e in s.stream:
        w = e.info["final_weights"]
        for d in (e.train, e.eval):
            resid = d.y - d.x @ w.T
            assert resid.var().item() == pytest.approx(0.09, rel=0.05)
            assert abs(resid.mean().item()) < 0.01


def test_training_targets_follow_the_drifting_weights():
    # the builder's draws, replayed in its order: weights, features, noise (then the eval data)
    kw = dict(n_features=6, n_outputs=2, gamma=0.95, prior_std=1.0, noise_std=0.2, n_segments=1,
              samples_per_segment=20_000, eval_samples=10, seed=3)
    e = linear_gaussian_drift(**kw).stream[0]
    g = torch.Generator().manual_seed(3)
    w = drift_weights(20_000, 2, 6, 0.95, 1.0, g)
    x = torch.randn(20_000, 6, generator=g) / 6**0.5
    assert torch.equal(x, e.train.x) and torch.equal(w[-1], e.info["final_weights"])
    resid = e.train.y - torch.einsum("nof,nf->no", w, x)
    assert resid.var().item() == pytest.approx(0.04, rel=0.05)
    # the drift is what explains the targets: the final weights alone fit them much worse
    assert (e.train.y - x @ w[-1].T).var() > 5 * resid.var()


def test_the_signal_has_about_the_prior_variance_and_segments_reset():
    s = linear_gaussian_drift(gamma=0.5, prior_std=2.0, noise_std=0.0, n_segments=20,
                              samples_per_segment=5000, eval_samples=10)
    y = torch.cat([e.train.y for e in s.stream])
    assert y.var().item() == pytest.approx(4.0, rel=0.1)  # features scaled by 1/sqrt(n_features)
    finals = torch.stack([e.info["final_weights"].flatten() for e in s.stream])
    slope, _ = lag1(finals)
    assert abs(slope) < 0.2  # fresh weights every segment, unrelated to the last


@pytest.mark.parametrize("params,match", [
    ({"gamma": 0.0}, r"'scenario.gamma' must be in \(0, 1\], got 0.0"),
    ({"gamma": 1.01}, r"'scenario.gamma' must be in \(0, 1\], got 1.01"),
    ({"gamma": -0.5}, r"'scenario.gamma' must be in \(0, 1\]"),
    ({"n_features": 0}, r"'scenario.n_features' must be >= 1, got 0"),
    ({"n_outputs": 0}, r"'scenario.n_outputs' must be >= 1, got 0"),
    ({"n_segments": 0}, r"'scenario.n_segments' must be >= 1, got 0"),
    ({"samples_per_segment": -3}, r"'scenario.samples_per_segment' must be >= 1, got -3"),
    ({"eval_samples": 0}, r"'scenario.eval_samples' must be >= 1, got 0"),
    ({"prior_std": 0.0}, r"'scenario.prior_std' must be > 0"),
    ({"noise_std": -0.1}, r"'scenario.noise_std' must be >= 0"),
])
def test_bad_settings_are_config_errors_naming_the_key(params, match):
    with pytest.raises(ConfigError, match=match):
        SCENARIOS.build("linear_gaussian_drift", params)


def test_called_directly_a_bad_setting_is_a_param_error():
    with pytest.raises(ParamError, match=r"'gamma' must be in \(0, 1\]"):
        linear_gaussian_drift(gamma=2.0)


def test_the_config_lists_every_argument_with_its_default_and_builds():
    cfg = compose(["scenario=linear_gaussian_drift"]).scenario  # the node generated from the signature
    params = SCENARIOS.params("linear_gaussian_drift")
    assert list(cfg) == ["name", *SCENARIO_COMMON, *params]  # SCENARIO_COMMON: scenario.boundaries
    assert OmegaConf.to_container(cfg)["seed"] == "${seed}"
    assert {k: cfg[k] for k in params if k != "seed"} == {
        k: p.default for k, p in params.items() if k != "seed"}
    assert inspect.signature(linear_gaussian_drift).parameters["seed"].default == 0
    sc = validate(compose(["scenario=linear_gaussian_drift", "seed=5"]))["scenario"]
    s = SCENARIOS.build(sc.pop("name"), sc)
    assert len(s.stream) == 4 and sum(len(e.train) for e in s.stream) == 20_000
    check_scenario(s)
