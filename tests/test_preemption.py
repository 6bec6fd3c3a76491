"""Faults on a real ``clframe run`` subprocess: a signal stops it with a checkpoint, a kill -9 while a
checkpoint is being written leaves the previous one loadable, and the resumed run ends exactly
where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clframe.checkpoint import latest_checkpoint
from clframe.config import compose
from clframe.runner import run

CLFRAME = str(Path(sys.executable).parent / "clframe")
TIMING = {"train_time_s", "train_samples_per_s", "wall_time_s", "run_dir", "checkpoint_save_s", "checkpoint_mb",
          "resumed_from"}
BASE = ["scenario.n_experiences=2", "backbone.hidden=[32]", "logger.progress=false", "train.num_threads=1",
        "eval.every=5", "strategy=replay", "backbone.dropout=0.1"]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([CLFRAME, "run", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc {proc.returncode}) before the fault:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.0005)


def resume_cli(run_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run([CLFRAME, "run", f"resume={run_dir}"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def assert_same_as_uninterrupted(run_dir: Path, overrides: list[str], tmp_path: Path) -> None:
    resumed = json.loads((run_dir / "summary.json").read_text())
    reference = run(compose(overrides), tmp_path / "reference")
    differing = [k for k in reference if k not in TIMING and json.dumps(reference[k]) != json.dumps(resumed[k])]
    assert not differing, differing
    assert resumed["resumed_from"] is not None
    assert (run_dir / "metrics.csv").read_bytes() == (tmp_path / "reference" / "metrics.csv").read_bytes()
    _, mine = latest_checkpoint(run_dir)
    _, ref = latest_checkpoint(tmp_path / "reference")
    for k, v in ref["module"]["model"].items():
        assert torch.equal(v, mine["module"]["model"][k]), k


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_with_a_checkpoint_and_the_resume_matches(sig, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*BASE, "train.epochs=30", "checkpoint.every=5"]
    proc = start([*overrides, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for(lambda: any((run_dir / "checkpoints").glob("step-*.ckpt")), proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert f"{signal.Signals(sig).name} received: stopped with checkpoint" in err
    assert f"Resume with: clframe run resume={run_dir}" in err
    assert "Traceback" not in err
    assert not (run_dir / "summary.json").exists() and (run_dir / "metrics.csv").exists()
    path, state = latest_checkpoint(run_dir)
    assert 0 < state["step"] < 30 * 28 and not state["finished"]
    if sig == signal.SIGINT:
        return  # the resume below is the same for both signals; once is enough
    done = resume_cli(run_dir, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"from {path.name}" in done.stdout
    assert_same_as_uninterrupted(run_dir, overrides, tmp_path)


def test_kill_9_while_a_checkpoint_is_written_leaves_the_previous_one(tmp_path):
    # a 20001-sample buffer makes each checkpoint ~5 MB, written at every step: most of the run is writing
    overrides = [*BASE, "strategies.replay.mem_size=20000", "checkpoint.every=1", "train.epochs=3"]
    for attempt in range(5):
        run_dir = tmp_path / f"run{attempt}"
        ckpts = run_dir / "checkpoints"
        proc = start([*overrides, f"hydra.run.dir={run_dir}"], tmp_path)
        wait_for(lambda d=ckpts: len(list(d.glob("step-*.ckpt"))) >= 2 and any(d.glob(".step-*.tmp")), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if any(ckpts.glob(".step-*.tmp")):
            break  # killed in the middle of a write
    else:
        pytest.fail("never caught the run while it was writing a checkpoint")
    complete = sorted(ckpts.glob("step-*.ckpt"))
    path, state = latest_checkpoint(run_dir)  # the newest complete file loads
    assert path == complete[-1] and state["step"] >= 1
    done = resume_cli(run_dir, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(ckpts.glob(".step-*.tmp"))  # the stale temporary file is cleaned up
    assert_same_as_uninterrupted(run_dir, overrides, tmp_path)
