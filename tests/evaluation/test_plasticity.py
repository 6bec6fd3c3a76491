"""Loss-of-plasticity diagnostics: per-task rows, their summary windows, the figure, and resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from clframe.config import compose
from clframe.monitors.plasticity.report import plasticity_summary, task_windows
from clframe.monitors.plasticity.stats import effective_rank, layer_stats
from clframe.run.runner import build, fit, run

RUN = ["scenario=random_labels", "scenario.n_tasks=3", "scenario.subset=64", "train.epochs=4", "train.lr=0.1",
       "backbone.hidden=[32,32]", "logger.progress=false", "monitors.continual.enabled=false",
       "monitors.plasticity.enabled=true"]


def test_effective_rank_is_the_dimension_for_isotropic_features_and_one_for_rank_one():
    assert effective_rank(torch.eye(8)).item() == pytest.approx(8.0, rel=1e-5)
    rank_one = torch.randn(50, 1) @ torch.randn(1, 8)
    assert effective_rank(rank_one).item() == pytest.approx(1.0, abs=1e-3)


def test_layer_stats_counts_units_that_never_fire_and_the_largest_singular_value():
    built = build(compose(RUN))
    net = built.module.backbone.net
    with torch.no_grad():
        net[1].bias[:8] = -1e3  # 8 of the first layer's 32 units never fire
    x = built.scenario.stream[0].eval.x
    stats = layer_stats(built.module, x, torch.zeros(len(x), dtype=torch.long))
    with torch.no_grad():
        h = net[2](net[1](x.flatten(1)))
    dead = (h > 0).sum(0) == 0
    assert dead[:8].all() and stats["dead_fraction/backbone.net.2"].item() == pytest.approx(dead.float().mean().item())
    w = net[1].weight.detach()
    assert stats["sigma_max/backbone.net.1.weight"].item() == pytest.approx(torch.linalg.svdvals(w)[0].item(),
                                                                            rel=1e-5)
    assert stats["weight_norm/backbone.net.1.weight"].item() == pytest.approx(w.norm().item(), rel=1e-5)


def test_one_row_per_task_with_online_accuracy_of_the_steps_before_each_update():
    built = build(compose(RUN))
    seen = []
    original = built.module.training_step

    def recording_step(batch, batch_idx):  # online accuracy: the prediction before the step, on the stream samples
        with torch.no_grad():
            seen.append((batch.exp, (built.module(batch.x, batch.t).argmax(-1) == batch.y).float().sum().item(),
                         len(batch)))
        return original(batch, batch_idx)

    built.module.training_step = recording_step
    fit(built)
    rows = built.monitor("plasticity").rows
    assert [r["task"] for r in rows] == [0, 1, 2] and rows[-1]["step"] == built.module.cl_step
    for r in rows:
        correct = sum(c for e, c, _ in seen if e == r["task"])
        total = sum(n for e, _, n in seen if e == r["task"])
        assert r["online_acc"] == pytest.approx(correct / total, abs=1e-6)
        assert 0.0 <= r["plasticity"] <= 1.0 and r["grad_norm"] > 0


def test_summary_windows_and_the_figure(tmp_path):
    s = run(compose(RUN), tmp_path)
    assert len(s["plasticity"]) == 3 and len(s["task_end_acc"]) == 3
    diag = np.diag(np.array(s["acc_matrix"]))
    assert s["task_end_acc_tasks_2_11"] == pytest.approx(diag[1:].mean())
    assert s["task_end_acc_last10"] == pytest.approx(diag.mean())
    assert (tmp_path / "plots" / "plasticity.png").stat().st_size > 10_000
    assert task_windows(40) == {"tasks_2_11": slice(1, 11), "last10": slice(30, 40)}
    rows = [{"online_acc": a, "plasticity": 0.5} for a in (0.1, 0.2)]
    assert plasticity_summary(rows, [[0.3, 0], [0, 0.9]])["online_acc_tasks_2_11"] == pytest.approx(0.2)


def test_a_resumed_run_records_the_same_diagnostics(tmp_path):
    a = run(compose(RUN + ["checkpoint.every=5", "checkpoint.keep=100"]), tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for p in (tmp_path / "b" / "checkpoints").glob("*.ckpt"):
        if int(p.name.split("-")[1].split(".")[0]) > 12:  # mid task 1 (8 steps per task)
            p.unlink()
    (tmp_path / "b" / "summary.json").unlink()
    b = run(compose(RUN + ["checkpoint.every=5", "checkpoint.keep=100", f"resume={tmp_path / 'b'}"]), tmp_path / "x")
    assert json.dumps(a["plasticity"]) == json.dumps(b["plasticity"])
