"""The run directory: config.yaml, metrics.csv, summary.json, atomic writes, wandb, and engines."""

from __future__ import annotations

import csv
import json
import os
import re

import lightning
import pytest
import torch
import yaml

import clframe
from clframe.config import compose
from clframe.errors import StorageError
from clframe.run.records import METRIC_FIELDS, atomic_write
from clframe.run.runner import build, fit, run

# the conftest's ``tiny`` overrides (a function-scoped fixture; this run is shared by the module)
TINY = ["scenario.n_experiences=2", "backbone.hidden=[32]", "train.epochs=1", "logger.progress=false"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: runs before the conftest's per-test single-thread fixture
    try:
        run_dir = tmp_path_factory.mktemp("run")
        summary = run(compose(TINY + ["strategy=[replay,ewc]", "seed=2", "experiment_name=records"]), run_dir)
    finally:
        torch.set_num_threads(threads)
    return run_dir, summary


def test_run_dir_contents(tiny_run):
    run_dir, _ = tiny_run
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "metrics.csv", "summary.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]


def test_config_yaml_is_resolved(tiny_run):
    run_dir, _ = tiny_run
    text = (run_dir / "config.yaml").read_text()
    assert "${" not in text
    cfg = yaml.safe_load(text)
    assert "hydra" not in cfg
    assert cfg["seed"] == 2 and cfg["experiment_name"] == "records"
    assert cfg["scenario"]["seed"] == 2  # was ${seed}
    assert cfg["strategies"]["replay"]["seed"] == 2
    assert set(cfg["strategies"]) == {"replay", "ewc"}
    # the saved config builds the same run again
    rebuilt = build(cfg)
    assert list(rebuilt.module.strategies) == ["replay", "ewc"]


def test_metrics_csv(tiny_run):
    run_dir, summary = tiny_run
    with open(run_dir / "metrics.csv") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["kind"] == "boundary"]
    assert reader.fieldnames == METRIC_FIELDS == ["step", "experience", "eval_experience", "acc", "loss", "kind"]
    R = summary["acc_matrix"]
    T = len(R)
    assert T == 2 and len(rows) == T * T
    assert [(int(r["experience"]), int(r["eval_experience"])) for r in rows] == [(i, j) for i in range(T)
                                                                                   for j in range(T)]
    for r in rows:
        assert float(r["acc"]) == pytest.approx(R[int(r["experience"])][int(r["eval_experience"])])
        assert float(r["loss"]) > 0
    steps = [int(r["step"]) for r in rows]
    assert steps[-1] == summary["steps"] and steps[0] < steps[-1]


def test_summary_json(tiny_run):
    run_dir, returned = tiny_run
    s = json.loads((run_dir / "summary.json").read_text())
    for k in ("acc_matrix", "final_avg_acc", "avg_forgetting", "bwt", "steps", "wall_time_s",
              "train_samples_per_s", "seed", "versions"):
        assert k in s, k
    assert set(s["versions"]) >= {"clframe", "torch", "lightning"}
    assert s["versions"]["clframe"] == clframe.__version__
    assert s["versions"]["torch"] == torch.__version__ and s["versions"]["lightning"] == lightning.__version__
    assert s["seed"] == 2 and s["strategies"] == ["replay", "ewc"]
    assert s["steps"] == 44 and s["wall_time_s"] > 0 and s["train_samples_per_s"] > 0
    assert s["final_avg_acc"] == pytest.approx(sum(s["acc_matrix"][-1]) / 2)
    assert s["final_accs"] == s["acc_matrix"][-1]
    assert s == json.loads(json.dumps(returned))  # the file is what run() returned


# -- atomic_write -------------------------------------------------------------------------
def test_atomic_write_creates_and_replaces(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    atomic_write(path, "one")
    assert path.read_text() == "one"
    atomic_write(path, "two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]  # no temp file left
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_atomic_write_failure_keeps_old_content_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    atomic_write(path, "old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StorageError, match=f"^Cannot write {re.escape(str(path))}: disk full"):
        atomic_write(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


# -- wandb -------------------------------------------------------------------------------
@pytest.fixture
def no_wandb_run():
    wandb = pytest.importorskip("wandb")
    if wandb.run is not None:
        wandb.finish()
    yield wandb
    if wandb.run is not None:
        wandb.finish()


def test_wandb_offline_run(tiny, tmp_path, no_wandb_run, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    summary = run(compose(tiny + ["logger.wandb=true"]), tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].is_dir()
    assert list(runs[0].glob("run-*.wandb"))
    assert json.loads((tmp_path / "summary.json").read_text())["acc_matrix"] == summary["acc_matrix"]


def test_wandb_consecutive_runs_get_their_own_wandb_run(tiny, tmp_path, no_wandb_run, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for seed in (0, 1):
        run(compose(tiny + ["logger.wandb=true", f"seed={seed}"]), tmp_path / f"s{seed}")
    for seed in (0, 1):
        assert list((tmp_path / f"s{seed}" / "wandb").glob("offline-run-*")), f"seed {seed} has no wandb run"


# -- engines -------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["naive", "[replay,ewc]"])
def test_fabric_engine_matches_trainer(tiny, strategy):
    results = {}
    for engine in ("trainer", "fabric"):
        built = build(compose(tiny + [f"strategy={strategy}", f"trainer.engine={engine}", "train.momentum=0.9"]))
        fit(built)
        results[engine] = built.module
    t, f = results["trainer"], results["fabric"]
    assert t.acc_matrix == f.acc_matrix
    assert t.loss_log == f.loss_log
    assert t.cl_step == f.cl_step == 44 and t.samples_seen == f.samples_seen
