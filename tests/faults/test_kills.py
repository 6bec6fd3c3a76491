"""kill -9 at any moment loses nothing: a run killed over and over, even while it writes a
checkpoint, resumes each time from its newest whole checkpoint and ends exactly where an
uninterrupted run does. Real ``clframe run`` subprocesses; slow."""

from __future__ import annotations

import random
import signal
import time

import pytest
from process_helpers import BASE, assert_same_as_uninterrupted, resume_cli, start, wait_for

from clframe.checkpoint.files import latest_checkpoint, list_checkpoints

pytestmark = pytest.mark.slow


def test_kill_9_while_a_checkpoint_is_written_leaves_the_previous_one(tmp_path):
    # a 20001-sample buffer makes each checkpoint ~5 MB, written at every step: most of the run is writing
    overrides = [*BASE, "strategies.replay.mem_size=20000", "checkpoint.every=1", "train.epochs=3"]
    for attempt in range(5):
        run_dir = tmp_path / f"run{attempt}"
        ckpts = run_dir / "checkpoints"
        proc = start(["run", *overrides, f"hydra.run.dir={run_dir}"], tmp_path)
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


def test_a_chain_of_ten_kill_9_at_random_moments_ends_like_an_uninterrupted_run(tmp_path):
    overrides = [*BASE, "checkpoint.every=1", "checkpoint.keep=3", "train.epochs=10"]
    run_dir = tmp_path / "run"
    rng = random.Random(17)
    steps: list[int] = []
    proc = start(["run", *overrides, f"hydra.run.dir={run_dir}"], tmp_path)
    while len(steps) < 10:
        done = max((s for s, _ in list_checkpoints(run_dir)), default=0)
        # training is under way again (a checkpoint past the last one): kill it at a random moment after that
        while proc.poll() is None and max((s for s, _ in list_checkpoints(run_dir)), default=0) <= done:
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.1))
        if proc.poll() is not None:
            break  # it finished before the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        steps.append(latest_checkpoint(run_dir)[1]["step"])
        proc = start(["run", f"resume={run_dir}"], tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert len(steps) == 10 and steps == sorted(steps) and steps[-1] < 440, steps  # killed mid-run, ten times
    assert_same_as_uninterrupted(run_dir, overrides, tmp_path)
