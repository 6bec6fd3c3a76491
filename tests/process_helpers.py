"""Helpers for tests that run ``clframe`` as a real subprocess and fault it (signals, kill -9, a full
disk), then check that the resumed run ends exactly where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from clframe.checkpoint.files import latest_checkpoint
from clframe.config import compose
from clframe.run.results import TIMING_KEYS
from clframe.run.runner import run

CLFRAME = str(Path(sys.executable).parent / "clframe")
TIMING = TIMING_KEYS
# a replay run of 2 experiences that dropout makes depend on the global RNG
BASE = ["scenario.n_experiences=2", "backbone.hidden=[32]", "logger.progress=false", "train.num_threads=1",
        "monitors.continual.every=5", "strategy=replay", "backbone.dropout=0.1"]
ENV = {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``clframe <args>`` in the background (``run`` is not implied)."""
    return subprocess.Popen([CLFRAME, *args], cwd=cwd, env={**os.environ, **ENV, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def clframe(args: list[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """``clframe <args>`` to the end."""
    return subprocess.run([CLFRAME, *args], cwd=cwd, env={**os.environ, **ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll ``predicate`` until true; fail if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc {proc.returncode}) before the fault:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.0005)


def resume_cli(run_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    return clframe(["run", f"resume={run_dir}"], cwd)


def assert_same_as_uninterrupted(run_dir: Path, overrides: list[str], tmp_path: Path) -> None:
    """``run_dir`` (a faulted and resumed run) has the summary, metrics.csv and weights of an uninterrupted run
    of ``overrides``."""
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
