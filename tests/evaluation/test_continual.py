"""The continual evaluator: fixed subsets, seen/all, boundaries, and no effect on training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clframe.config import compose
from clframe.run.runner import build, fit

TINY = ["scenario.n_experiences=3", "backbone.hidden=[16]", "train.epochs=1", "logger.progress=false"]


def _fit(*overrides: str):
    built = build(compose([*TINY, *overrides]))
    fit(built)
    return built


@pytest.mark.parametrize("engine", ["trainer", "fabric"])
def test_evaluating_every_step_leaves_training_unchanged(engine):
    # dropout consumes the RNG in training; the evaluator must neither consume it nor touch weights
    common = ["backbone.dropout=0.3", f"trainer.engine={engine}", "strategy=replay"]
    with_eval = _fit(*common, "monitors.continual.every=1")
    without = _fit(*common, "monitors.continual.enabled=false")
    assert with_eval.monitor("continual") is not None and without.monitor("continual") is None
    a, b = with_eval.module.state_dict(), without.module.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert with_eval.module.acc_matrix == without.module.acc_matrix


def test_curve_has_an_evaluation_every_k_steps_plus_start_and_boundaries():
    built = _fit("monitors.continual.every=5")
    m, curve = built.module, built.monitor("continual").curve(built.module)
    expected = {0} | set(range(5, m.cl_step + 1, 5)) | set(m.boundaries)
    assert set(curve.steps.tolist()) == expected
    assert len(curve.steps) == len(expected)  # a boundary on a multiple of 5 is not evaluated twice
    assert list(curve.boundaries) == m.boundaries == list(np.cumsum(built.loader.steps_per_experience()))
    assert curve.experience[0] == -1
    # the evaluation at an experience's last step belongs to that experience
    for k, b in enumerate(m.boundaries):
        assert curve.experience[curve.steps.tolist().index(b)] == k


def test_seen_evaluates_only_experiences_trained_so_far_and_all_evaluates_every_one():
    seen = _fit("monitors.continual.every=3", "monitors.continual.on=seen")
    curve = seen.monitor("continual").curve(seen.module)
    for exp, row in zip(curve.experience, curve.acc):
        n_seen = max(exp, 0) + 1
        assert not np.isnan(row[:n_seen]).any() and np.isnan(row[n_seen:]).all()
    every = _fit("monitors.continual.every=3", "monitors.continual.on=all")
    assert not np.isnan(every.monitor("continual").curve(every.module).acc).any()


def test_subsets_are_fixed_seeded_and_capped():
    built = _fit("monitors.continual.every=50", "monitors.continual.subset=20")
    ev = built.monitor("continual")
    sizes = [len(y) for y in ev._cache["y"]]
    assert sizes == [min(20, len(e.eval)) for e in built.scenario.stream]
    again = _fit("monitors.continual.every=50", "monitors.continual.subset=20")
    assert all(torch.equal(a, b) for a, b in zip(ev._cache["x"], again.monitor("continual")._cache["x"]))
    # accuracy is a multiple of 1/20 on a 20-sample subset
    acc = ev.curve(built.module).acc
    assert np.allclose((acc[~np.isnan(acc)] * 20) % 1, 0, atol=1e-4) | np.allclose((acc[~np.isnan(acc)] * 20) % 1, 1)


def test_boundary_continual_evaluation_agrees_with_the_accuracy_matrix_on_full_subsets():
    # with a subset as large as the eval data, the evaluation at each boundary is the matrix row
    built = _fit("monitors.continual.every=7", "monitors.continual.subset=100000", "monitors.continual.on=all")
    curve = built.monitor("continual").curve(built.module)
    for k, b in enumerate(built.module.boundaries):
        row = curve.acc[curve.steps.tolist().index(b)]
        assert np.allclose(row, built.module.acc_matrix[k], atol=1e-6)


def test_results_stay_on_device_until_a_flush():
    built = build(compose([*TINY, "monitors.continual.every=1"]))
    built.monitor("continual").flush_every = 10**9
    seen_pending = []
    orig = built.monitor("continual").flush

    def spy():
        seen_pending.append(len(built.monitor("continual")._pending))
        orig()

    built.monitor("continual").flush = spy
    fit(built)
    # flushed at experience ends (and at the end), many evaluations at a time
    assert max(seen_pending) > 10
    assert len(built.monitor("continual").steps) == 1 + built.module.cl_step


def test_metrics_csv_has_continual_and_boundary_rows(tmp_path):
    import csv

    from clframe.run.runner import run

    run(compose([*TINY, "monitors.continual.every=4"]), tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    kinds = {r["kind"] for r in rows}
    assert kinds == {"continual", "boundary"}
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(steps)
    assert (tmp_path / "plots" / "accuracy_curves.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "acc_matrix.png").stat().st_size > 1000
