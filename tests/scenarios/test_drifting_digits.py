"""Drifting digits: label permutations and class-prior shifts at random times in one ordered stream."""

from __future__ import annotations

import pytest
import torch
from clframe.scenarios._common import symmetric_inputs
from clframe.scenarios.drifting_digits import drifting_digits, event_times
from omegaconf import OmegaConf

from clframe.config import compose, validate
from clframe.config.defaults import SCENARIO_COMMON
from clframe.config.registry import SCENARIOS, ParamError
from clframe.data.datasets import load_dataset
from clframe.errors import ConfigError
from clframe.run.checks import check_scenario


@pytest.fixture(scope="module")
def scenario():
    return drifting_digits()


@pytest.fixture(scope="module")
def train_pool():
    ds = symmetric_inputs(load_dataset("digits"))
    return ds.x_train.flatten(1), ds.y_train


def classes_of(x: torch.Tensor, pool) -> torch.Tensor:
    """The dataset class of each input, found by looking it up among the training examples."""
    px, py = pool
    dist, idx = torch.cdist(x.flatten(1), px).min(1)
    assert (dist < 1e-4).all()  # every stream input is a training example
    return py[idx]


def test_segments_cover_the_stream_one_per_event(scenario):
    s = scenario
    assert s.stream.boundary_free and s.stream.ordered and s.objective == "classification"
    assert s.n_classes == 10 and s.input_shape == (1, 8, 8) and len(s.stream) == 1 + 3 + 3
    assert sum(len(e.train) for e in s.stream) == 20_000
    starts = [e.info["start_step"] for e in s.stream]
    assert starts == [0, *torch.tensor([len(e.train) for e in s.stream]).cumsum(0)[:-1].tolist()]
    events = [e.info["event"] for e in s.stream]
    assert events[0] == "start" and sorted(events[1:]) == ["permutation"] * 3 + ["prior_shift"] * 3
    first = s.stream[0].info
    assert torch.equal(first["label_map"], torch.arange(10))
    assert torch.allclose(first["class_prior"], torch.full((10,), 0.1))
    for i, e in enumerate(s.stream):
        assert e.index == i and e.task_label == 0 and e.classes_in_this_experience == list(range(10))
        assert len(e.eval) == 449  # the whole test split
        assert e.train.y.dtype == e.eval.y.dtype == torch.long and e.train.x.dtype == torch.float32
        assert -1 <= e.train.x.min() and e.train.x.max() <= 1
        assert e.info["label_map"].dtype == torch.long and e.info["class_prior"].dtype == torch.float32
        assert e.info["class_prior"].sum().item() == pytest.approx(1.0)
    check_scenario(s)


def test_min_gap_is_respected(scenario):
    assert min(len(e.train) for e in scenario.stream) >= 1000
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        t = event_times(5000, 4, 900, g)
        gaps = torch.diff(torch.cat([torch.tensor([0]), t, torch.tensor([5000])]))
        assert (gaps >= 900).all()
    # exactly enough room: the one placement
    assert event_times(50, 4, 10, g).tolist() == [10, 20, 30, 40]


def test_event_times_are_uniform_over_the_valid_placements():
    # 7 samples, 2 events, gaps >= 2: slack 1, so (2, 4), (2, 5) and (3, 5), each a third of the time
    g = torch.Generator().manual_seed(0)
    draws = [tuple(event_times(7, 2, 2, g).tolist()) for _ in range(3000)]
    assert set(draws) == {(2, 4), (2, 5), (3, 5)}
    for placement in set(draws):
        assert draws.count(placement) / 3000 == pytest.approx(1 / 3, abs=0.04)


def test_labels_follow_the_label_map_which_changes_at_each_permutation(scenario, train_pool):
    ds = symmetric_inputs(load_dataset("digits"))
    prev = prev_eval_y = None
    for e in scenario.stream:
        m = e.info["label_map"]
        assert torch.equal(m.sort().values, torch.arange(10))  # a permutation of the labels
        assert torch.equal(e.train.y, m[classes_of(e.train.x, train_pool)])
        assert torch.equal(e.eval.x, ds.x_test) and torch.equal(e.eval.y, m[ds.y_test])
        if e.info["event"] == "permutation":
            assert not torch.equal(m, prev)
            assert not torch.equal(e.eval.y, prev_eval_y)  # the eval labels follow the new map
        elif prev is not None:
            assert torch.equal(m, prev)
        prev, prev_eval_y = m, e.eval.y


def test_after_a_prior_shift_the_class_frequencies_follow_the_new_prior(train_pool):
    # long segments (>= 15000 samples), no permutations: labels are the dataset classes
    s = drifting_digits(n_samples=60_000, n_permutations=0, n_prior_shifts=2, min_gap=15_000, seed=2)
    assert [e.info["event"] for e in s.stream] == ["start", "prior_shift", "prior_shift"]
    freqs = [torch.bincount(e.train.y, minlength=10).float() / len(e.train) for e in s.stream]
    for e, f in zip(s.stream, freqs):
        assert torch.equal(e.info["label_map"], torch.arange(10))
        assert torch.allclose(f, e.info["class_prior"], atol=0.02)
    for i in (1, 2):
        prior, before = s.stream[i].info["class_prior"], s.stream[i - 1].info["class_prior"]
        assert (prior - before).abs().sum() > 0.2 and (freqs[i] - freqs[i - 1]).abs().sum() > 0.2
    assert torch.equal(classes_of(s.stream[1].train.x[:2000], train_pool), s.stream[1].train.y[:2000])


def test_the_prior_applies_to_classes_before_the_label_map(scenario, train_pool):
    for e in scenario.stream:
        if e.info["event"] == "prior_shift":
            cls = classes_of(e.train.x, train_pool)
            f = torch.bincount(cls, minlength=10).float() / len(cls)
            assert torch.allclose(f, e.info["class_prior"], atol=0.06)  # segments of >= 1000 samples


def test_the_samples_are_spread_over_the_training_set(scenario, train_pool):
    x = scenario.stream[0].train.x.flatten(1)
    assert len(torch.unique(x, dim=0)) > 0.7 * len(train_pool[0])  # many distinct examples, not a few


def test_deterministic_for_a_seed_and_different_for_another(scenario):
    again, other = drifting_digits(seed=0), drifting_digits(seed=1)
    for a, b in zip(scenario.stream, again.stream):
        assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
        assert a.info["event"] == b.info["event"] and a.info["start_step"] == b.info["start_step"]
        assert torch.equal(a.info["class_prior"], b.info["class_prior"])
    assert ([e.info["start_step"] for e in scenario.stream] != [e.info["start_step"] for e in other.stream]
            or not torch.equal(scenario.stream[0].train.y, other.stream[0].train.y))


def test_the_global_random_state_is_left_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    drifting_digits(n_samples=3000, min_gap=100)
    assert torch.equal(torch.rand(3), expected)


def test_eval_samples_takes_the_first_of_the_test_split():
    s = drifting_digits(n_samples=2000, n_permutations=1, n_prior_shifts=0, min_gap=500, eval_samples=100)
    ds = symmetric_inputs(load_dataset("digits"))
    for e in s.stream:
        assert torch.equal(e.eval.x, ds.x_test[:100]) and torch.equal(e.eval.y, e.info["label_map"][ds.y_test[:100]])


def test_no_events_is_one_uniform_segment():
    s = drifting_digits(n_samples=500, n_permutations=0, n_prior_shifts=0)
    assert len(s.stream) == 1 and len(s.stream[0].train) == 500 and s.stream[0].info["event"] == "start"


def test_an_impossible_min_gap_is_an_error_naming_it():
    with pytest.raises(ParamError, match=r"'min_gap' must be <= n_samples / \(n_permutations \+ n_prior_shifts "
                                         r"\+ 1\) = 2857 for n_samples=20000 and 6 events, got 3000"):
        drifting_digits(min_gap=3000)
    with pytest.raises(ConfigError, match=r"'scenario.min_gap' must be <= .* = 1666"):
        SCENARIOS.build("drifting_digits", {"n_samples": 5000, "n_permutations": 2, "n_prior_shifts": 0,
                                                  "min_gap": 2000})


@pytest.mark.parametrize("params,match", [
    ({"n_samples": 0}, r"'scenario.n_samples' must be >= 1, got 0"),
    ({"min_gap": 0}, r"'scenario.min_gap' must be >= 1, got 0"),
    ({"n_permutations": -1}, r"'scenario.n_permutations' must be >= 0, got -1"),
    ({"n_prior_shifts": -2}, r"'scenario.n_prior_shifts' must be >= 0, got -2"),
    ({"dirichlet_alpha": 0.0}, r"'scenario.dirichlet_alpha' must be > 0"),
    ({"eval_samples": 0}, r"'scenario.eval_samples' must be >= 1 or null"),
])
def test_bad_settings_are_config_errors_naming_the_key(params, match):
    with pytest.raises(ConfigError, match=match):
        SCENARIOS.build("drifting_digits", params)


def test_the_config_lists_every_argument_with_its_default_and_builds():
    cfg = compose(["scenario=drifting_digits"]).scenario  # the node generated from the signature
    params = SCENARIOS.params("drifting_digits")
    assert list(cfg) == ["name", *SCENARIO_COMMON, *params]  # SCENARIO_COMMON: scenario.boundaries
    assert OmegaConf.to_container(cfg)["seed"] == "${seed}"
    assert {k: cfg[k] for k in params if k != "seed"} == {k: p.default for k, p in params.items() if k != "seed"}
    sc = validate(compose(["scenario=drifting_digits", "scenario.n_samples=6000", "scenario.min_gap=500"]))
    sc = sc["scenario"]
    s = SCENARIOS.build(sc.pop("name"), sc)
    assert len(s.stream) == 7 and sum(len(e.train) for e in s.stream) == 6000
    check_scenario(s)
