"""Permuted scenario: one fixed pixel permutation per experience, all classes in each."""

from __future__ import annotations

import uuid

import pytest
import torch
from clframe.scenarios.permuted import permuted

from clframe.config.registry import DATASETS
from clframe.data.datasets import Dataset, load_dataset
from clframe.errors import ConfigError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def ramp(monkeypatch):
    """A registered dataset whose every sample is 0, 1, ..., 15 (4x4): a permuted sample *is* its permutation."""
    name = f"ramp_{uuid.uuid4().hex[:8]}"
    x = torch.arange(16.0).reshape(1, 1, 4, 4)

    def load(root=None, download=False):
        return Dataset(x.repeat(6, 1, 1, 1), torch.arange(6) % 3, x.repeat(3, 1, 1, 1), torch.arange(3), n_classes=3)

    monkeypatch.setitem(DATASETS._items, name, load)
    return name


def test_every_experience_holds_every_class_with_the_original_labels(digits):
    s = permuted(n_experiences=3)
    assert len(s.stream) == 3
    assert s.n_classes == 10 and s.n_tasks == 1 and s.input_shape == (1, 8, 8)
    for e in s.stream:
        assert e.classes_in_this_experience == list(range(10))
        assert torch.equal(e.train.y, digits.y_train)
        assert torch.equal(e.eval.y, digits.y_test)
        assert e.train.x.shape == digits.x_train.shape
        assert e.task_label == 0 and not e.train.t.any()


def test_each_experience_permutes_the_same_pixels(digits):
    s = permuted(n_experiences=3)
    original = digits.x_train.flatten(1).sort(dim=1).values
    for e in s.stream:
        assert torch.equal(e.train.x.flatten(1).sort(dim=1).values, original)
        assert torch.equal(e.eval.x.flatten(1).sort(dim=1).values, digits.x_test.flatten(1).sort(dim=1).values)
    xs = [e.train.x for e in s.stream]
    assert not torch.equal(xs[0], xs[1]) and not torch.equal(xs[1], xs[2]) and not torch.equal(xs[0], xs[2])
    assert not torch.equal(xs[0], digits.x_train)


def test_identity_first_leaves_the_first_experience_alone(digits):
    s = permuted(n_experiences=2, identity_first=True)
    assert torch.equal(s.stream[0].train.x, digits.x_train)
    assert torch.equal(s.stream[0].eval.x, digits.x_test)
    assert not torch.equal(s.stream[1].train.x, digits.x_train)


def test_train_and_eval_share_one_permutation_per_experience(ramp):
    s = permuted(dataset=ramp, n_experiences=4, seed=3)
    perms = []
    for e in s.stream:
        p = e.train.x[0].flatten()
        assert sorted(p.tolist()) == list(range(16))  # a permutation of the pixels
        assert (e.train.x.flatten(1) == p).all() and (e.eval.x.flatten(1) == p).all()
        perms.append(p.tolist())
    assert len({tuple(p) for p in perms}) == 4


def test_permutations_are_seeded(ramp):
    def perms(seed: int) -> list[list[float]]:
        return [e.train.x[0].flatten().tolist() for e in permuted(dataset=ramp, n_experiences=2, seed=seed).stream]

    assert perms(0) == perms(0)
    assert perms(0) != perms(1)


def test_mnist1d_is_permuted_too():
    s = permuted(dataset="mnist1d", n_experiences=2)
    assert s.input_shape == (40,)
    assert s.stream[1].train.x.shape[1:] == (40,)


@pytest.mark.parametrize("n", [0, -2])
def test_no_experiences_is_a_config_error(n):
    with pytest.raises(ConfigError, match=rf"scenario.n_experiences must be >= 1, got {n}: a stream needs at least"):
        permuted(n_experiences=n)
