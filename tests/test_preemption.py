"""Signals on a real ``clframe run`` subprocess: SIGTERM or SIGINT stops it with a checkpoint, and the
resumed run ends exactly where an uninterrupted one does. (kill -9 and other faults: tests/faults/.)"""

from __future__ import annotations

import signal

import pytest
from process_helpers import BASE, assert_same_as_uninterrupted, resume_cli, start, wait_for

from clframe.checkpoint.files import latest_checkpoint


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_with_a_checkpoint_and_the_resume_matches(sig, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*BASE, "train.epochs=30", "checkpoint.every=5"]
    proc = start(["run", *overrides, f"hydra.run.dir={run_dir}"], tmp_path)
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
