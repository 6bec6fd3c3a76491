"""Lightning DDP on 2 CPU processes over gloo, launched by ``clframe run`` like a user would."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clframe.checkpoint.files import latest_checkpoint
from clframe.config import compose
from clframe.run.results import TIMING_KEYS
from clframe.run.runner import build, run

CLFRAME = str(Path(sys.executable).parent / "clframe")
TINY_DDP = ["scenario.n_experiences=2", "backbone.hidden=[32]", "logger.progress=false", "train.num_threads=1",
            "monitors.continual.every=5", "train.epochs=5", "train.lr=0.2", "trainer.strategy=ddp", "trainer.devices=2",
            "trainer.accelerator=cpu"]


ONE_PROCESS = [o for o in TINY_DDP if not o.startswith(("trainer.strategy", "trainer.devices"))]


def ddp_run(tmp_path: Path, *overrides: str, base_overrides: list[str] = TINY_DDP) -> Path:
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([CLFRAME, "run", *base_overrides, *overrides, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return run_dir


def final_checkpoints(run_dir: Path) -> list[dict]:
    files = sorted((run_dir / "checkpoints").glob("step-*-rank*.ckpt"))
    last = max(int(p.name.split("-")[1]) for p in files)
    return [torch.load(run_dir / "checkpoints" / f"step-{last:08d}-rank{r}.ckpt", weights_only=True) for r in (0, 1)]


def test_ddp_two_cpu_processes_train_ewc_and_replay_in_step(tmp_path):
    run_dir = ddp_run(tmp_path, "strategy=[ewc,replay]")
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["world_size"] == 2
    assert s["rank_weight_max_abs_diff"] == 0.0  # measured across the ranks at the end of training
    # each rank takes half of every global batch of 32: the steps of one process; an epoch's last batch of fewer
    # samples than ranks makes the short rank repeat the epoch's first sample
    sizes = [len(e.train) for e in build(compose(TINY_DDP[:3] + ["trainer.devices=1"])).scenario.stream]
    assert s["steps"] == 5 * sum(-(-n // 32) for n in sizes)
    assert s["samples"] == 5 * sum(n + (n % 32 == 1) for n in sizes)
    # the metrics make sense: both experiences learned, replay keeps the first above chance (0.2)
    assert len(s["acc_matrix"]) == 2 and s["acc_matrix"][0][0] > 0.8 and s["acc_matrix"][1][1] > 0.8
    assert s["acc_matrix"][1][0] > 0.5
    # continual evaluation ran on rank 0 only: no duplicated rows
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    keys = [(r["step"], r["eval_experience"], r["kind"]) for r in rows]
    assert len(keys) == len(set(keys)) and sum(r["kind"] == "continual" for r in rows) > 5
    # every rank wrote its own checkpoint: same weights and Fisher, its own replay buffer
    r0, r1 = final_checkpoints(run_dir)
    for k, v in r0["module"]["model"].items():
        assert torch.equal(v, r1["module"]["model"][k]), k
    f0, f1 = (c["module"]["strategies"]["ewc"]["fishers"][-1] for c in (r0, r1))
    assert all(torch.equal(f0[k], f1[k]) for k in f0) and any(v.abs().sum() > 0 for v in f0.values())
    # one replay buffer between the ranks (trainer.split_across_ranks): the one a single process fills
    b0, b1 = (c["module"]["strategies"]["replay"]["buffer"] for c in (r0, r1))
    assert b0["size"] == b1["size"] == 200 and torch.equal(b0["x"], b1["x"]) and torch.equal(b0["y"], b1["y"])
    single = run(compose([*ONE_PROCESS, "strategy=[ewc,replay]"]), tmp_path / "single")
    _, one = latest_checkpoint(tmp_path / "single")
    assert torch.equal(one["module"]["strategies"]["replay"]["buffer"]["x"], b0["x"])
    assert single["steps"] == s["steps"]
    assert max(abs(a - b) for a, b in zip(single["acc_matrix"][-1], s["acc_matrix"][-1])) < 0.02
    assert (run_dir / "train_ddp_process_1.log").exists() and not list(tmp_path.glob("runs"))


@pytest.mark.slow
def test_ddp_resume_from_the_middle_matches_the_uninterrupted_run(tmp_path):
    import shutil

    run_dir = ddp_run(tmp_path, "strategy=[ewc,replay]", "checkpoint.every=7", "checkpoint.keep=1000")
    resumed = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed)
    for p in (resumed / "checkpoints").glob("*.ckpt"):
        if int(p.name.split("-")[1]) > 30:  # mid experience 0 of 55 steps each
            p.unlink()
    (resumed / "summary.json").unlink()
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([CLFRAME, "run", f"resume={resumed}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (run_dir, resumed))
    timing = TIMING_KEYS
    assert [k for k in a if k not in timing and json.dumps(a[k]) != json.dumps(b[k])] == []
    for mine, ref in zip(final_checkpoints(resumed), final_checkpoints(run_dir)):
        for k, v in ref["module"]["model"].items():
            assert torch.equal(v, mine["module"]["model"][k]), k
        assert torch.equal(ref["module"]["strategies"]["replay"]["buffer"]["x"],
                           mine["module"]["strategies"]["replay"]["buffer"]["x"])


@pytest.mark.slow
def test_ddp_naive(tmp_path):
    s = json.loads((ddp_run(tmp_path, "strategy=naive") / "summary.json").read_text())
    assert s["world_size"] == 2 and s["rank_weight_max_abs_diff"] == 0.0 and s["acc_matrix"][-1][1] > 0.8


def test_fabric_engine_refuses_several_processes():
    from clframe.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.engine=fabric runs one process"):
        build(compose(["trainer.engine=fabric", "trainer.devices=2", "trainer.strategy=ddp"]))


@pytest.mark.slow
def test_sigterm_stops_every_rank_at_the_same_step_with_a_checkpoint(tmp_path):
    import signal
    import time

    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([CLFRAME, "run", *TINY_DDP, "train.epochs=200", "checkpoint.every=20",
                             f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("*-rank1.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to rank 0 only, as a scheduler's kill of the job's main process
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-3000:]
    assert err.count("SIGTERM received: stopped with checkpoint") == 1 and "Traceback" not in err
    steps = {r: max(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob(f"*-rank{r}.ckpt"))
             for r in (0, 1)}
    assert steps[0] == steps[1] >= 20  # the stop may land on the step whose checkpoint the test waited for


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_ranks_run_the_single_process_experiment(tmp_path, seed):
    """trainer.devices=2 keeps the experiment (split digits with replay, the README's numbers): the global batch,
    the steps and the one replay buffer are the single process's, so the final accuracy is too (within 3 points;
    measured equal to the last digit)."""
    base = ["experiment=split_digits", "strategy=replay", f"seed={seed}", "train.num_threads=1",
            "logger.progress=false", "monitors.continual.enabled=false"]
    one = run(compose(base), tmp_path / "one")
    two = json.loads((ddp_run(tmp_path, *base, "trainer.strategy=ddp", "trainer.devices=2",
                              "trainer.accelerator=cpu", base_overrides=[]) / "summary.json").read_text())
    assert two["world_size"] == 2 and two["steps"] == one["steps"] and two["samples"] == one["samples"]
    assert abs(two["final_avg_acc"] - one["final_avg_acc"]) <= 0.03


@pytest.mark.slow
def test_split_across_ranks_false_gives_every_rank_a_batch_and_a_buffer(tmp_path):
    run_dir = ddp_run(tmp_path, "strategy=replay", "trainer.split_across_ranks=false")
    s = json.loads((run_dir / "summary.json").read_text())
    sizes = [len(e.train) for e in build(compose(TINY_DDP[:3] + ["trainer.devices=1"])).scenario.stream]
    assert s["steps"] == 5 * sum(-(-n // 64) for n in sizes)  # a global batch of 2 x 32
    b0, b1 = (c["module"]["strategies"]["replay"]["buffer"] for c in final_checkpoints(run_dir))
    assert b0["size"] == b1["size"] == 200 and not torch.equal(b0["x"], b1["x"])  # a buffer per rank
