"""Sequential few-shot episodes: delayed label feedback, a label permutation per sequence, class-disjoint
experiences and held-out classes."""

from __future__ import annotations

import pytest
import torch
from clframe.scenarios.fewshot_sequences import ClassPool, build_episodes, fewshot_sequences, fewshot_steps

from clframe.config.registry import SCENARIOS, ParamError
from clframe.core.objectives import IGNORE
from clframe.data.datasets import load_dataset
from clframe.errors import ConfigError
from clframe.monitors.fewshot import shot_index

F = 64  # digits features per step
SMALL = {"n_train_episodes": 40, "n_eval_episodes": 20}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def scenario():
    return fewshot_sequences(**SMALL)


def identify(feats: torch.Tensor, digits) -> tuple[torch.Tensor, torch.Tensor]:
    """(split: 0 train / 1 test, dataset class) of every example [..., F]; the digits images are all distinct."""
    images = torch.cat([digits.x_train, digits.x_test]).flatten(1)
    labels = torch.cat([digits.y_train, digits.y_test])
    split = torch.cat([torch.zeros(len(digits.y_train)), torch.ones(len(digits.y_test))]).long()
    d = torch.cdist(feats.reshape(-1, F), images)
    dist, idx = d.min(1)
    assert (dist == 0).all(), "every example is a dataset image, unchanged"
    return split[idx].view(feats.shape[:-1]), labels[idx].view(feats.shape[:-1])


def true_labels(x: torch.Tensor, y: torch.Tensor, n_way: int) -> torch.Tensor:
    """The episode labels, hidden first shots included: the feedback one-hot of the next step (the last step is
    never a first shot when shots >= 2)."""
    return torch.cat([x[:, 1:, F:F + n_way].argmax(-1), y[:, -1:]], dim=1)


def test_defaults_shapes_and_stream(scenario):
    s = scenario
    assert len(s.stream) == 2 and s.n_classes == 3 and s.n_tasks == 1
    assert s.input_shape == (15, F + 3 + 1)  # T = n_way * shots; example, label one-hot, valid-step channel
    for e in s.stream:
        assert e.train.x.shape == (40, 15, F + 4) and e.train.y.shape == (40, 15)
        assert e.eval.x.shape == (20, 15, F + 4) and e.eval.y.shape == (20, 15)
        assert e.train.x.dtype == torch.float32 and e.train.y.dtype == torch.int64
        assert (e.train.x[..., -1] == 1).all() and (e.eval.x[..., -1] == 1).all()
        assert not e.train.t.any() and e.task_label == 0
        assert e.classes_in_this_experience == [0, 1, 2]  # the head's outputs


def test_feedback_is_the_previous_label_and_first_shots_are_ignored():
    shown = fewshot_sequences(**SMALL, first_shot_ignored=True).stream[0].train
    full = fewshot_sequences(**SMALL, first_shot_ignored=False).stream[0].train
    assert torch.equal(shown.x, full.x)  # the same episodes; only the scoring differs
    y, x = full.y, full.x
    feedback = x[..., F:F + 3]
    assert (feedback[:, 0] == 0).all()
    assert torch.equal(feedback[:, 1:], torch.nn.functional.one_hot(y[:, :-1], 3).float())
    assert (feedback.sum(-1)[:, 1:] == 1).all()
    # IGNORE exactly on each class's first shot, the label elsewhere
    first = shot_index(y) == 0
    assert torch.equal(shown.y == IGNORE, first)
    assert torch.equal(shown.y[~first], y[~first])
    assert ((shown.y == IGNORE).sum(1) == 3).all()
    assert torch.equal(true_labels(shown.x, shown.y, 3), y)


def test_each_class_has_one_label_per_sequence_and_the_mapping_varies(scenario, digits):
    e = scenario.stream[0]
    labels = true_labels(e.train.x, e.train.y, 3)
    split, classes = identify(e.train.x[..., :F], digits)
    assert (split == 0).all()  # training episodes from train images
    assert (torch.bincount(labels.flatten() + 3 * torch.arange(len(labels)).repeat_interleave(15)) == 5).all()
    mappings = set()
    for c, lab in zip(classes.tolist(), labels.tolist()):
        pairs = set(zip(c, lab))
        assert len(pairs) == 3 == len({a for a, _ in pairs}) == len({b for _, b in pairs})  # a bijection
        mappings.add(frozenset(pairs))
    assert len(mappings) > 10  # a new permutation (and class draw) per sequence: nothing to memorise
    # every class of the experience is seen under every label
    seen = {(c, lab) for m in mappings for c, lab in m}
    assert seen == {(c, lab) for c in range(4) for lab in range(3)}


def test_examples_of_a_class_are_distinct_within_a_sequence(digits):
    g = torch.Generator().manual_seed(0)
    pool = ClassPool.of(digits.x_test, digits.y_test, [4, 5, 6])
    slots = fewshot_steps(30, 3, 8, g)
    ep = build_episodes(pool, slots, slots, 3, False, g)
    _, classes = identify(ep.x[..., :F], digits)
    assert torch.equal(classes, ep.classes)
    for seq in ep.x[..., :F]:
        assert len(torch.unique(seq, dim=0)) == 24
    # slot j shows the j-th drawn class throughout
    assert all(len(set(zip(s, c))) == 3 for s, c in zip(ep.slots.tolist(), ep.classes.tolist()))


def test_experiences_and_heldout_classes_are_disjoint(scenario, digits):
    groups = [set(e.info["dataset_classes"]) for e in scenario.stream]
    heldout = set(scenario.stream[0].info["heldout_classes"])
    assert groups == [{0, 1, 2, 3}, {4, 5, 6}] and heldout == {7, 8, 9}
    for e, group in zip(scenario.stream, groups):
        for data, split_id in ((e.train, 0), (e.eval, 1)):
            split, classes = identify(data.x[..., :F], digits)
            assert set(classes.unique().tolist()) <= group
            assert (split == split_id).all()
    held = scenario.stream[0].info["heldout_eval"]
    assert all(e.info["heldout_eval"] is held for e in scenario.stream)
    assert held.x.shape == (20, 15, F + 4) and held.y.shape == (20, 15)
    split, classes = identify(held.x[..., :F], digits)
    assert (split == 1).all() and set(classes.unique().tolist()) == heldout
    assert "heldout_eval" not in fewshot_sequences(**SMALL, heldout_classes=0).stream[0].info


def test_seeding():
    a, b = fewshot_sequences(**SMALL, seed=3), fewshot_sequences(**SMALL, seed=3)
    c = fewshot_sequences(**SMALL, seed=4)
    for ea, eb, ec in zip(a.stream, b.stream, c.stream):
        assert torch.equal(ea.train.x, eb.train.x) and torch.equal(ea.eval.y, eb.eval.y)
        assert not torch.equal(ea.train.x, ec.train.x) and not torch.equal(ea.train.y, ec.train.y)


def test_shot_index_on_a_hand_example():
    y = torch.tensor([[0, 1, 0, 0, 1, 2, 1], [2, 2, 2, 0, 0, 1, 1]])
    expected = torch.tensor([[0, 0, 1, 2, 1, 0, 2], [0, 1, 2, 0, 1, 0, 1]])
    assert torch.equal(shot_index(y), expected)
    # first shots hidden as IGNORE keep their place in the count
    hidden = y.masked_fill(expected == 0, IGNORE)
    assert torch.equal(shot_index(hidden), expected)
    assert torch.equal(shot_index(torch.tensor([[IGNORE, 3, 3]])), torch.tensor([[0, 1, 2]]))


def test_other_sizes_and_mnist1d():
    s = fewshot_sequences(dataset="mnist1d", n_experiences=3, n_way=2, shots=4, heldout_classes=2, n_train_episodes=8,
                          n_eval_episodes=4, first_shot_ignored=False)
    assert s.input_shape == (8, 40 + 2 + 1) and s.n_classes == 2
    assert [e.info["dataset_classes"] for e in s.stream] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert (s.stream[2].train.y != IGNORE).all()


@pytest.mark.parametrize(("params", "key"), [
    ({"n_way": 5}, "n_way"),  # 4 and 3 classes per experience by default
    ({"n_way": 1}, "n_way"),
    ({"n_way": 4, "heldout_classes": 0, "n_experiences": 3}, "n_way"),
    ({"shots": 0}, "shots"),
    ({"shots": 1}, "shots"),  # nothing left to score with first_shot_ignored
    ({"heldout_classes": 2}, "heldout_classes"),  # fewer than n_way
    ({"heldout_classes": -1}, "heldout_classes"),
    ({"n_experiences": 0}, "n_experiences"),
    ({"n_train_episodes": 0}, "n_train_episodes"),
    ({"n_eval_episodes": 0}, "n_eval_episodes"),
    ({"dataset": "mnist"}, "dataset"),
])
def test_bad_parameters_name_the_key(params, key):
    with pytest.raises(ParamError) as e:
        fewshot_sequences(**params)
    assert e.value.param == key


def test_one_shot_needs_the_first_shot_scored():
    s = fewshot_sequences(shots=1, first_shot_ignored=False, n_train_episodes=2, n_eval_episodes=2)
    assert s.input_shape == (3, F + 4) and (s.stream[0].train.y != IGNORE).all()


def test_registry_reports_the_config_key():
    msg = r"'scenario.n_way' must be at most the classes of each experience, 3 \(digits has 10 classes, 0 held out"
    with pytest.raises(ConfigError, match=msg):
        SCENARIOS.build("fewshot_sequences", {"n_way": 5, "heldout_classes": 0, "n_experiences": 3})


OVERRIDES = ["scenario=fewshot_sequences", "scenario.n_train_episodes=32", "scenario.n_eval_episodes=8",
             "backbone=gru", "backbone.readout=every", "backbone.hidden=32", "head=linear", "train.epochs=1",
             "train.batch_size=16", "logger.progress=false", "checkpoint.enabled=false",
             "monitors.continual.enabled=false"]


def test_runs_end_to_end_with_a_per_step_readout(tmp_path):
    import clframe.run.runner
    from clframe.config import compose

    summary = clframe.run.runner.run(compose(OVERRIDES), tmp_path)
    acc = torch.tensor(summary["acc_matrix"])
    assert acc.shape == (2, 2) and ((acc >= 0) & (acc <= 1)).all()
