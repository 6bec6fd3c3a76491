"""A run's timing in summary.json: the training steps' time apart from evaluation and checkpoints, so
a user can tell where the time went."""

from __future__ import annotations

import pytest

from clframe.config import compose
from clframe.run.runner import run


def test_the_training_time_leaves_out_evaluation_and_checkpoints(tiny, tmp_path):
    quiet = run(compose(tiny + ["monitors.continual.enabled=false", "checkpoint.enabled=false"]), tmp_path / "a")
    busy = run(compose(tiny + ["monitors.continual.every=1", "monitors.continual.subset=300",
                               "checkpoint.every=2"]), tmp_path / "b")
    for s in (quiet, busy):
        assert s["train_time_s"] + s["eval_time_s"] + s["checkpoint_time_s"] == pytest.approx(s["fit_time_s"])
        assert s["train_samples_per_s"] == pytest.approx(s["samples"] / s["train_time_s"])
    assert quiet["checkpoint_time_s"] == 0 and busy["checkpoint_time_s"] > 0
    # an evaluation after every step takes longer than the boundary evaluations alone
    assert busy["eval_time_s"] > 2 * quiet["eval_time_s"] > 0
    assert busy["eval_time_s"] / busy["fit_time_s"] > quiet["eval_time_s"] / quiet["fit_time_s"]
