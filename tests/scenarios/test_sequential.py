"""Digits and MNIST-1D read as sequences, split by class."""

from __future__ import annotations

import torch

from clframe.config.registry import SCENARIOS
from clframe.data.datasets import load_dataset
from clframe.data.sequences import split_lengths


def test_sequential_digits_reads_one_image_row_per_step():
    s = SCENARIOS.build("sequential_digits", {"n_experiences": 5})
    assert s.input_shape == (8, 9) and len(s.stream) == 5
    ds = load_dataset("digits")
    e = s.stream[0]
    x, lengths = split_lengths(e.train.x)
    assert (lengths == 8).all()
    # the first training sample of experience 0 is the first digit-0/1 image of the split, row by row
    first = ds.x_train[torch.isin(ds.y_train, torch.tensor([0, 1]))][0, 0]
    assert torch.equal(x[0], first)
    assert sorted(e.classes_in_this_experience) == [0, 1]


def test_task_incremental_forms_give_task_labels():
    s = SCENARIOS.build("sequential_mnist1d", {"n_experiences": 2, "task_incremental": True})
    assert s.input_shape == (40, 2) and s.n_tasks == 2
    assert (s.stream[1].train.t == 1).all() and "task-incremental" in s.name
