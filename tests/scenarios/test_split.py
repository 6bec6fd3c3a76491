"""Split scenario: each experience holds exactly its group of classes."""

from __future__ import annotations

import pytest
import torch
from clframe.scenarios.split import split

from clframe.config.registry import SCENARIOS
from clframe.data.datasets import load_dataset
from clframe.errors import ConfigError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_default_is_five_experiences_of_two_classes(digits):
    s = split()
    assert len(s.stream) == 5
    assert s.n_classes == 10 and s.n_tasks == 1 and s.input_shape == (1, 8, 8)
    assert [e.classes_in_this_experience for e in s.stream] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [e.index for e in s.stream] == list(range(5))
    for e in s.stream:
        assert e.train.x.shape[1:] == (1, 8, 8) and e.eval.x.shape[1:] == (1, 8, 8)
        assert e.train.x.dtype == torch.float32 and e.train.y.dtype == torch.int64
        assert len(e.train) == len(e.train.x) == len(e.train.t) > 0
        assert e.task_label == 0 and not e.train.t.any() and not e.eval.t.any()
    assert sum(len(e.train) for e in s.stream) == len(digits.y_train)
    assert sum(len(e.eval) for e in s.stream) == len(digits.y_test)


def test_each_experience_has_exactly_its_classes_and_they_partition_all(digits):
    s = split(n_experiences=3)
    groups = [set(e.classes_in_this_experience) for e in s.stream]
    assert [len(g) for g in groups] == [4, 3, 3]  # as even as possible
    assert set().union(*groups) == set(range(10))
    assert sum(len(g) for g in groups) == 10  # disjoint
    for e, g in zip(s.stream, groups):
        assert set(e.train.y.tolist()) == g
        assert set(e.eval.y.tolist()) == g
        # every sample of those classes is there, unchanged
        mask = torch.isin(digits.y_train, torch.tensor(sorted(g)))
        assert torch.equal(e.train.x, digits.x_train[mask])
        assert torch.equal(e.train.y, digits.y_train[mask])


def test_class_order_is_respected():
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    s = split(n_experiences=5, class_order=order)
    assert [e.classes_in_this_experience for e in s.stream] == [[9, 8], [7, 6], [5, 4], [3, 2], [1, 0]]
    assert set(s.stream[0].train.y.tolist()) == {8, 9}


def test_class_order_overrides_shuffle():
    order = [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]
    s = split(n_experiences=10, class_order=order, shuffle_classes=True, seed=5)
    assert [e.classes_in_this_experience for e in s.stream] == [[c] for c in order]


def test_shuffle_classes_is_seeded_and_reproducible():
    def order(seed: int) -> list[int]:
        return [c for e in split(n_experiences=5, shuffle_classes=True, seed=seed).stream
                for c in e.classes_in_this_experience]

    a, b = order(0), order(0)
    assert a == b
    assert sorted(a) == list(range(10))
    assert a != list(range(10))
    assert order(1) != a


def test_task_incremental_labels_are_the_experience_index():
    s = split(n_experiences=5, task_incremental=True)
    assert s.n_tasks == 5
    for i, e in enumerate(s.stream):
        assert e.task_label == i
        assert (e.train.t == i).all() and (e.eval.t == i).all()


@pytest.mark.parametrize("order", [[0, 1, 2], [0, 0, 1, 2, 3, 4, 5, 6, 7, 8], list(range(11))])
def test_bad_class_order_is_a_config_error(order):
    with pytest.raises(ConfigError, match=r"scenario.class_order must be a permutation of \[0, 1, 2"):
        split(class_order=order)


@pytest.mark.parametrize("n", [0, -1, 11])
def test_bad_n_experiences_is_a_config_error(n):
    with pytest.raises(ConfigError, match=rf"scenario.n_experiences must be in \[1, 10\] for digits, got {n}"):
        split(n_experiences=n)


def test_one_and_ten_experiences():
    assert [len(e.classes_in_this_experience) for e in split(n_experiences=1).stream] == [10]
    assert [e.classes_in_this_experience for e in split(n_experiences=10).stream] == [[c] for c in range(10)]


def test_mnist1d_split_has_one_dimensional_inputs():
    s = split(dataset="mnist1d", n_experiences=2)
    assert s.input_shape == (40,)
    assert [e.classes_in_this_experience for e in s.stream] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert s.stream[0].train.x.shape[1:] == (40,)
    assert sum(len(e.train) for e in s.stream) == 4000


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="Unknown dataset 'digit'. Did you mean 'digits'?"):
        split(dataset="digit")


def test_registered_and_param_checked():
    assert SCENARIOS.get("split") is split
    with pytest.raises(ConfigError, match="'scenario.n_experiences' must be int"):
        SCENARIOS.build("split", {"n_experiences": "5"})
