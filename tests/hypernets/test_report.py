"""What a hypernetwork run reports: sizes, task-inference accuracy, and the fits of a 1-D toy."""

from __future__ import annotations

import json

from clframe.config import compose
from clframe.run.runner import run

SPLIT = ["scenario.n_experiences=3", "scenario.task_incremental=true", "backbone.hidden=[32]", "hypernet=hnet_mlp",
         "hypernet.chunk_size=500", "strategy=hnet_reg", "train.optimizer=adam", "train.lr=0.002", "train.epochs=2",
         "monitors.continual.enabled=false", "logger.progress=false", "checkpoint.enabled=false"]


def test_entropy_inference_is_scored_against_the_true_task_after_every_experience(tmp_path):
    s = run(compose([*SPLIT, "hypernet.task_inference=entropy"]), tmp_path / "ent")
    h = s["hypernet"]
    assert [len(r) for r in h["task_inference_acc"]] == [1, 2, 3]
    assert h["task_inference_acc"][0] == [1.0]  # one trained task: always inferred
    assert all(0.0 <= a <= 1.0 for a in h["task_inference_final"])
    assert h["task_inference_final_mean"] > 1 / 3  # better than guessing among 3 tasks
    assert h["target_params"] == (64 * 32 + 32) + (32 * 10 + 10)
    assert h["params"] > 0 and h["task_emb_params"] == 3 * 24
    # the accuracy is measured without the labels: it cannot beat given labels
    given = run(compose(SPLIT), tmp_path / "given")
    assert "task_inference_acc" not in given["hypernet"]
    assert s["final_avg_acc"] <= given["final_avg_acc"] + 1e-9


def test_toy_regression_run_draws_the_fits(tmp_path):
    s = run(compose(["experiment=hnet_toy_regression", "train.epochs=5", "monitors.continual.enabled=false",
                     "logger.progress=false",
                     "checkpoint.enabled=false"]), tmp_path)
    assert s["objective"] == "regression" and len(s["acc_matrix"]) == 3
    assert (tmp_path / "plots" / "fits.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "summary.json").read_text())["hypernet"]["target_params"] == 20 + 110 + 11
