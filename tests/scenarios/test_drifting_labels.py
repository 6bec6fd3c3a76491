"""Drifting labels: the class -> label mapping of a sequence changes at unmarked switch steps."""

from __future__ import annotations

import pytest
import torch
from clframe.scenarios.drifting_labels import drift_labels, drifting_labels
from clframe.scenarios.fewshot_sequences import ClassPool, build_episodes

from clframe.config.registry import SCENARIOS, ParamError
from clframe.core.objectives import IGNORE
from clframe.data.datasets import load_dataset
from clframe.errors import ConfigError

F = 64  # digits features per step
SMALL = {"n_train_episodes": 30, "n_eval_episodes": 10}


@pytest.fixture(scope="module")
def scenario():
    return drifting_labels(**SMALL)


def segments(d) -> torch.Tensor:
    """The mapping each step uses [N, T]: how many switches came at or before it."""
    steps = d.slots.shape[1]
    return (torch.arange(steps).view(1, 1, -1) >= d.switches.unsqueeze(-1)).sum(1)


def test_shapes_mask_and_feedback(scenario):
    s = scenario
    assert len(s.stream) == 2 and s.n_classes == 3 and s.input_shape == (60, F + 3 + 1)
    for e in s.stream:
        for data, n in ((e.train, 30), (e.eval, 10)):
            assert data.x.shape == (n, 60, F + 4) and data.y.shape == (n, 60) and data.y.dtype == torch.int64
            assert (data.x[..., -1] == 1).all()
            feedback = data.x[..., F:F + 3]
            assert (feedback[:, 0] == 0).all() and (feedback[:, 1:].sum(-1) == 1).all()
            labelled = data.y[:, :-1] != IGNORE
            assert torch.equal(feedback[:, 1:].argmax(-1)[labelled], data.y[:, :-1][labelled])
            assert ((data.y == IGNORE).sum(1) == 3).all()  # the first occurrence of each class
        assert e.classes_in_this_experience == [0, 1, 2]
    assert [e.info["dataset_classes"] for e in s.stream] == [[0, 1, 2, 3], [4, 5, 6]]
    assert s.stream[0].info["heldout_classes"] == [7, 8, 9]
    assert s.stream[1].info["heldout_eval"].x.shape == (10, 60, F + 4)


@pytest.mark.parametrize("drift", ["swap", "redraw"])
def test_labels_follow_the_mapping_of_their_segment(drift):
    d = drift_labels(200, 4, 30, 3, drift, torch.Generator().manual_seed(0))
    assert ((d.switches >= 1) & (d.switches < 30)).all()
    assert (d.switches.diff(dim=1) > 0).all()  # distinct, increasing
    maps = d.mappings.gather(1, segments(d).unsqueeze(-1).expand(-1, -1, 4))  # [N, T, n_way]
    assert torch.equal(d.labels, maps.gather(2, d.slots.unsqueeze(-1)).squeeze(-1))
    assert (d.mappings.sort(-1).values == torch.arange(4)).all()  # every mapping is a permutation
    changed = (d.mappings[:, 1:] != d.mappings[:, :-1]).sum(-1)  # [N, n_switches]
    if drift == "swap":
        assert (changed == 2).all()  # exactly two labels trade places
    else:
        assert (changed >= 2).all() and (changed > 2).any()
    counts = torch.nn.functional.one_hot(d.slots, 4).sum(1)
    assert ((counts == 7) | (counts == 8)).all()  # 30 steps over 4 classes, as even as possible


def test_the_change_shows_in_the_labels_of_repeated_classes():
    digits = load_dataset("digits")
    g = torch.Generator().manual_seed(1)
    d = drift_labels(100, 3, 60, 2, "swap", g)
    ep = build_episodes(ClassPool.of(digits.x_train, digits.y_train, [0, 1, 2, 3]), d.slots, d.labels, 3, True, g)
    assert torch.equal(ep.labels, d.labels)
    seen_changes = 0
    for cls, lab, switches in zip(ep.classes.tolist(), ep.labels.tolist(), d.switches.tolist()):
        bounds = [0, *switches, 60]
        # within a segment every class keeps one label, and the segment's labels are a bijection
        maps = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            pairs = set(zip(cls[lo:hi], lab[lo:hi]))
            assert len({c for c, _ in pairs}) == len(pairs) == len({la for _, la in pairs})
            maps.append(dict(pairs))
        # across each switch exactly two of the classes seen on both sides change label
        for before, after in zip(maps[:-1], maps[1:]):
            common = before.keys() & after.keys()
            moved = [c for c in common if before[c] != after[c]]
            assert len(moved) <= 2 and (len(moved) == 2 or len(common) < 3)
            seen_changes += len(moved) == 2
    assert seen_changes > 100  # most switches are visible to the learner from the feedback


def test_without_switches_the_mapping_is_fixed():
    d = drift_labels(50, 3, 12, 0, "swap", torch.Generator().manual_seed(0))
    assert d.switches.shape == (50, 0) and torch.equal(d.labels, d.slots)


def test_first_shots_are_the_first_occurrences_of_each_class():
    full = drifting_labels(**SMALL, first_shot_ignored=False).stream[0].train
    shown = drifting_labels(**SMALL).stream[0].train
    assert torch.equal(full.x, shown.x)
    feedback_labels = torch.cat([full.x[:, 1:, F:F + 3].argmax(-1), full.y[:, -1:]], dim=1)
    assert torch.equal(feedback_labels, full.y)
    assert (full.y != IGNORE).all()
    ignored = shown.y == IGNORE
    assert torch.equal(shown.y[~ignored], full.y[~ignored])
    assert (ignored.sum(1) == 3).all()
    # exactly each class's first occurrence, whatever labels it has later
    g = torch.Generator().manual_seed(0)
    d = drift_labels(50, 3, 20, 4, "redraw", g)
    digits = load_dataset("digits")
    ep = build_episodes(ClassPool.of(digits.x_train, digits.y_train, [4, 5, 6]), d.slots, d.labels, 3, True, g)
    first = torch.zeros_like(ep.y, dtype=torch.bool)
    for i, cls in enumerate(ep.classes.tolist()):
        first[i, [cls.index(c) for c in set(cls)]] = True
    assert torch.equal(ep.y == IGNORE, first)
    assert torch.equal(ep.y[~first], d.labels[~first])


def test_seeding():
    a, b, c = (drifting_labels(**SMALL, seed=s) for s in (5, 5, 6))
    assert torch.equal(a.stream[1].train.x, b.stream[1].train.x) and torch.equal(a.stream[1].eval.y, b.stream[1].eval.y)
    assert not torch.equal(a.stream[1].train.x, c.stream[1].train.x)
    assert not torch.equal(a.stream[1].train.y, c.stream[1].train.y)


@pytest.mark.parametrize(("params", "key"), [
    ({"length": 5}, "length"),  # fewer than two occurrences per class
    ({"n_switches": 60}, "n_switches"),
    ({"n_switches": -1}, "n_switches"),
    ({"drift": "flip"}, "drift"),
    ({"n_way": 5}, "n_way"),
    ({"n_way": 1}, "n_way"),
    ({"heldout_classes": 2}, "heldout_classes"),
    ({"n_train_episodes": 0}, "n_train_episodes"),
    ({"dataset": "cifar"}, "dataset"),
])
def test_bad_parameters_name_the_key(params, key):
    with pytest.raises(ParamError) as e:
        drifting_labels(**params)
    assert e.value.param == key


def test_registry_reports_the_config_key():
    with pytest.raises(ConfigError, match=r"'scenario.length' must be >= 2 \* n_way = 6, got 4"):
        SCENARIOS.build("drifting_labels", {"length": 4})


OVERRIDES = ["scenario=drifting_labels", "scenario.n_train_episodes=32", "scenario.n_eval_episodes=8",
             "scenario.length=20", "scenario.drift=redraw", "backbone=gru", "backbone.readout=every",
             "backbone.hidden=32", "head=linear", "train.epochs=1", "train.batch_size=16", "logger.progress=false",
             "checkpoint.enabled=false", "monitors.continual.enabled=false"]


def test_runs_end_to_end_with_a_per_step_readout(tmp_path):
    import clframe.run.runner
    from clframe.config import compose

    summary = clframe.run.runner.run(compose(OVERRIDES), tmp_path)
    acc = torch.tensor(summary["acc_matrix"])
    assert acc.shape == (2, 2) and ((acc >= 0) & (acc <= 1)).all()
