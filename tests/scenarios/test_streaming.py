"""The loss-of-plasticity streams: input-permuted, label-permuted and random labels."""

from __future__ import annotations

import pytest
import torch
from clframe.scenarios.input_permuted import input_permuted
from clframe.scenarios.label_permuted import label_permuted
from clframe.scenarios.random_labels import random_labels

from clframe.config import compose
from clframe.data.datasets import load_dataset
from clframe.errors import ConfigError
from clframe.run.runner import build, fit

BUILDERS = [input_permuted, label_permuted, random_labels]


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
def test_streams_are_boundary_free_with_inputs_in_minus_one_one(builder, dataset):
    kw = {"subset": 64} if builder is random_labels else {"samples_per_task": 50}
    s = builder(dataset=dataset, n_tasks=3, **kw)
    assert s.stream.boundary_free and len(s.stream) == 3
    x = torch.cat([e.train.x for e in s.stream])
    assert x.min() >= -1 - 1e-6 and x.max() <= 1 + 1e-6 and x.min() < -0.5 and x.max() > 0.5
    assert all(len(e.train) == (64 if builder is random_labels else 50) for e in s.stream)


def test_input_permuted_walks_one_pass_through_the_data_under_each_tasks_permutation():
    ds = load_dataset("digits")
    n = len(ds.y_train)
    s = input_permuted(n_tasks=3, samples_per_task=n // 3, symmetric=False)
    seen = []
    for e in s.stream:
        p = e.info["permutation"]
        unpermuted = torch.empty_like(e.train.x.flatten(1))
        unpermuted[:, p] = e.train.x.flatten(1)
        # each sample is a training image; no image twice within one pass over the data
        match = (unpermuted[:, None, :] == ds.x_train.flatten(1)[None]).all(-1)
        assert match.any(1).all()
        seen.append(match.float().argmax(1))
        assert torch.equal(e.eval.x.flatten(1), ds.x_test.flatten(1)[:, p])
    seen = torch.cat(seen)
    assert len(set(seen.tolist())) == len(seen)
    assert not torch.equal(s.stream[0].info["permutation"], s.stream[1].info["permutation"])


def test_label_permuted_composes_each_new_permutation_with_the_previous_mapping():
    s = label_permuted(n_tasks=4, samples_per_task=100)
    maps = [e.info["label_map"] for e in s.stream]
    g = torch.Generator().manual_seed(0)
    mapping = torch.arange(10)
    for m in maps:
        fresh = torch.randperm(10, generator=g)
        mapping = fresh[mapping]
        assert torch.equal(m, mapping)
    ds = load_dataset("digits")
    assert torch.equal(s.stream[2].eval.y, maps[2][ds.y_test])


def test_random_labels_relabels_the_same_images_and_evaluates_on_them():
    s = random_labels(n_tasks=3, subset=100)
    first = s.stream[0]
    for e in s.stream:
        assert torch.equal(e.train.x, first.train.x) and torch.equal(e.eval.x, e.train.x)
        assert torch.equal(e.eval.y, e.train.y)
    assert (s.stream[0].train.y != s.stream[1].train.y).float().mean() > 0.7  # fresh labels: ~90% differ
    assert torch.unique(torch.cat([e.train.y for e in s.stream])).tolist() == list(range(10))


@pytest.mark.parametrize("builder,key", [(input_permuted, "samples_per_task"), (random_labels, "subset")])
def test_empty_streams_are_config_errors(builder, key):
    with pytest.raises(ConfigError, match=r"scenario.n_tasks must be >= 1"):
        builder(n_tasks=0)
    with pytest.raises(ConfigError, match=rf"scenario.{key} must be >= 1"):
        builder(**{key: 0})


def test_a_streaming_run_at_batch_size_1_learns_and_sees_no_experience_hooks():
    built = build(compose(["scenario=input_permuted", "scenario.n_tasks=2", "scenario.samples_per_task=300",
                           "train.batch_size=1", "train.lr=0.03", "backbone.hidden=[64]", "logger.progress=false",
                           "monitors.continual.enabled=false", "checkpoint.enabled=false", "strategy=replay"]))
    fit(built)
    m = built.module
    assert m.cl_step == 600 and len(m.acc_matrix) == 2 and m.boundaries == [300, 600]
    assert m.acc_matrix[1][1] > 0.5  # well above chance (0.1) after 300 single-sample steps
    assert built.module.exp_ended  # the stream's boundaries still close the accuracy matrix's rows
    # (ewc, which needs the experience events, is refused on such a stream: tests/test_boundaries.py)
