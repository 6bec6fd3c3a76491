"""Runs started at the same moment never share a run directory: four ``clframe run`` processes of one
experiment with different learning rates leave four directories whose config, summary and checkpoints
belong together, and ``clframe compare`` reports each run's own accuracy. Slow (real processes)."""

from __future__ import annotations

import json

import pytest
import yaml
from process_helpers import clframe, start

from clframe.checkpoint.files import latest_checkpoint

pytestmark = pytest.mark.slow

TINY = ["experiment=split_digits", "scenario.n_experiences=2", "backbone.hidden=[16]", "train.epochs=1",
        "logger.progress=false", "train.num_threads=1", "monitors.continual.enabled=false"]
LRS = ("0.2", "0.05", "0.01", "0.002")


def test_four_runs_started_at_once_keep_their_own_directories(tmp_path):
    procs = [start(["run", *TINY, f"train.lr={lr}"], tmp_path) for lr in LRS]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    runs = sorted((tmp_path / "runs" / "split_digits").iterdir())
    assert len(runs) == 4
    by_lr = {}
    for r in runs:
        config = yaml.safe_load((r / "config.yaml").read_text())
        summary = json.loads((r / "summary.json").read_text())
        _, ckpt = latest_checkpoint(r)
        assert ckpt["config"] == config  # the checkpoints are this config's run
        assert ckpt["module"]["records"]["acc_matrix"] == summary["acc_matrix"]  # ... and so is the summary
        assert summary["run_dir"] == str(r) or r.samefile(summary["run_dir"])
        by_lr[str(config["train"]["lr"])] = summary["final_avg_acc"]
    assert sorted(by_lr) == sorted(str(float(lr)) for lr in LRS)
    # clframe compare groups the runs by their own configs and reports each one's accuracy
    out = clframe(["compare", "runs/split_digits"], tmp_path).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith("train.lr=")}
    header = next(line.split() for line in out.splitlines() if line.split()[:2] == ["group", "seeds"])
    for lr, acc in by_lr.items():
        assert rows[f"train.lr={float(lr):g}"][header.index("final_avg_acc")] == f"{acc:.3f}"
