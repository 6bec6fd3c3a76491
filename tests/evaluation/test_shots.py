"""Accuracy against shots, on hand-made predictions and on a tiny in-context run."""

from __future__ import annotations

import torch

from clframe.config import compose
from clframe.core.objectives import IGNORE
from clframe.data.stream import TensorData
from clframe.monitors.fewshot import accuracy_by_shot, shot_index
from clframe.run.runner import run


def test_shot_index_counts_earlier_steps_with_the_same_label():
    y = torch.tensor([[0, 1, 0, 0, 1], [2, 2, 2, 1, 1]])
    assert shot_index(y).tolist() == [[0, 0, 1, 2, 1], [0, 1, 2, 0, 1]]


def test_accuracy_by_shot_groups_the_scored_steps_by_shot():
    y = torch.tensor([[IGNORE, IGNORE, 0, 1, 0], [IGNORE, 1, IGNORE, 0, 1]])
    # the model predicts label 0 everywhere
    model = lambda x, t: torch.nn.functional.one_hot(torch.zeros(x.shape[:2], dtype=torch.long), 2).float()  # noqa: E731
    data = TensorData(torch.zeros(2, 5, 3), y, torch.zeros(2, dtype=torch.long))
    acc = accuracy_by_shot(model, data, batch_size=1)
    # shots (hidden first shots count): row 0: 0 0 1 1 2; row 1: 0 1 0 1 2 -> shot 1: y=0,1,1,0 ; shot 2: 0,1
    assert acc == [None, 0.5, 0.5]


def test_an_in_context_run_reports_accuracy_against_shots_and_on_held_out_classes(tmp_path):
    s = run(compose(["scenario=fewshot_sequences", "scenario.n_train_episodes=64", "scenario.n_eval_episodes=16",
                     "backbone=fast_weights", "backbone.d_model=16", "backbone.n_layers=1", "backbone.readout=every",
                     "train.epochs=1", "monitors.continual.enabled=false", "logger.progress=false",
                     "checkpoint.enabled=false"]),
            tmp_path)
    shots = s["accuracy_by_shot"]
    assert set(shots) == {"0", "1", "heldout"}
    assert shots["0"][0] is None and len(shots["0"]) == 5  # first shots are not scored; 5 shots
    assert all(0 <= a <= 1 for a in shots["heldout"][1:]) and 0 <= s["heldout_acc"] <= 1
