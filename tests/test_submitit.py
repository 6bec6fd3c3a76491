"""Sweeps through Hydra's submitit launcher (``hydra/launcher=submitit_local``): each job runs in its own
Python process (submitit pickles the job function with cloudpickle), and ``clframe run -m`` still ends with the
comparison of the sweep. Run as the installed console script, as a user would."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLFRAME = Path(sys.executable).with_name("clframe")
SWEEP = ["hydra/launcher=submitit_local", "experiment=split_digits", "strategy=naive,replay", "seed=0",
         "scenario.n_experiences=2", "backbone.hidden=[16]", "train.epochs=1", "logger.progress=false",
         "monitors.continual.every=5", "train.num_threads=1"]


def clframe(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    p = subprocess.run([str(CLFRAME), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert p.returncode == 0, f"clframe {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p


def check_sweep(sweep: Path, stdout: str) -> None:
    """Two runs (naive, replay) with their results, each run by its own submitit job, and the comparison."""
    runs = sorted(p.parent for p in sweep.rglob("summary.json"))
    assert [r.relative_to(sweep).as_posix() for r in runs] == ["0-naive-s0", "1-replay-s0"]
    for run, strategy in zip(runs, ["naive", "replay"]):
        summary = json.loads((run / "summary.json").read_text())
        assert summary["strategies"] == [strategy]
        assert summary["experiment_name"] == "split_digits"
        assert len(summary["acc_matrix"]) == 2 and 0.0 <= summary["final_avg_acc"] <= 1.0
        assert (run / "metrics.csv").read_text().startswith("step,experience,eval_experience,acc,loss")
    # submitit's job folder (hydra.launcher.submitit_folder = ${hydra.sweep.dir}/.submitit/%j): one per job,
    # holding the job's stdout, i.e. the jobs really ran in other processes
    logs = sorted((sweep / ".submitit").glob("*/*_0_log.out"))
    assert len(logs) == 2
    assert all("accuracy matrix" in log.read_text() for log in logs)
    assert "accuracy matrix" not in stdout
    # ... and yet the sweep ended with the comparison table, written into the sweep directory
    table = stdout[stdout.rindex("experiment split_digits: 2 runs in 2 groups"):]
    assert "strategies=naive" in table and "strategies=replay" in table
    with open(sweep / "comparison.csv", newline="") as fh:
        rows = {row["group"]: row for row in csv.DictReader(fh)}
    assert set(rows) == {"strategies=naive", "strategies=replay"}
    final_acc = json.loads((sweep / "0-naive-s0" / "summary.json").read_text())["final_avg_acc"]
    assert float(rows["strategies=naive"]["final_avg_acc_mean"]) == pytest.approx(final_acc)
    assert (sweep / "comparison.png").is_file()


def test_submitit_local_sweep_then_compare(tmp_path):
    sweep = tmp_path / "sweep"
    p = clframe(["run", "-m", *SWEEP, f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    check_sweep(sweep, p.stdout)
    assert sorted(os.listdir(tmp_path)) == ["sweep"]  # nothing written anywhere else

    (sweep / "comparison.csv").unlink()
    out = clframe(["compare", str(sweep)], cwd=tmp_path).stdout
    assert "experiment split_digits: 2 runs in 2 groups" in out
    lines = out.splitlines()
    header = next(line.split() for line in lines if line.split()[:2] == ["group", "seeds"])
    rows = {line.split()[0]: line.split() for line in lines if line.strip().startswith("strategies=")}
    assert set(rows) == {"strategies=naive", "strategies=replay"}
    for group, strategy in [("strategies=naive", "naive"), ("strategies=replay", "replay")]:
        summary = json.loads(next(sweep.glob(f"*-{strategy}-s0/summary.json")).read_text())
        assert rows[group][header.index("final_avg_acc")] == f"{summary['final_avg_acc']:.3f}"
    assert (sweep / "comparison.csv").is_file()


@pytest.mark.slow
def test_submitit_sweep_in_the_default_directory(tmp_path):
    """Without ``hydra.sweep.dir=`` the sweep goes to multirun/<experiment_name>/<time>/ under the working
    directory, resolved once before the jobs start, and is compared at the end."""
    p = clframe(["run", "-m", *SWEEP], cwd=tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["multirun"]
    (sweep,) = (tmp_path / "multirun" / "split_digits").iterdir()
    assert sweep.name[:8].isdigit() and sweep.name[8] == "-"  # %Y%m%d-%H%M%S-<hash>
    check_sweep(sweep, p.stdout)


# -- the sweep directory, fixed and created before the jobs start (in-process, no training) ----------

def test_the_sweep_directory_is_claimed_once_with_a_unique_name(tmp_path, monkeypatch):
    from clframe.cli.run import _claim_dir

    monkeypatch.chdir(tmp_path)
    first, created = _claim_dir(SWEEP, True, SWEEP)  # the first job's hydra.sweep.dir, resolved and created once
    first = Path(first)
    assert created and first.is_dir() and first.parent == tmp_path / "multirun" / "split_digits"
    assert first.name[:8].isdigit() and first.name[8] == "-"  # %Y%m%d-%H%M%S-<hash>
    # the same sweep started again in the same second gets its own directory
    second = Path(_claim_dir(SWEEP, True, SWEEP)[0])
    assert second != first and second.parent == first.parent
    # under Hydra's basic launcher too, and a directory the user names is used as given
    given = ["strategy=naive,replay", "hydra.sweep.dir=out/${experiment_name}"]
    assert _claim_dir(given, True, given) == (str(tmp_path / "out" / "default"), True)


def test_the_directory_override_joins_the_other_overrides():
    from clframe.cli.run import _with_overrides

    key = "hydra.sweep.dir"
    assert _with_overrides(["-m", "a=1,2", "hydra.sweep.dir=x", "b=2"], {key: "'/s'"}) == [
        "-m", "a=1,2", "b=2", "hydra.sweep.dir='/s'"]
    # Hydra's parser takes the overrides as one block: the new one goes right after them, not after a flag
    assert _with_overrides(["-m", "a=1,2", "--config-name", "config"], {key: "'/s a,b'"}) == [
        "-m", "a=1,2", "hydra.sweep.dir='/s a,b'", "--config-name", "config"]
    assert _with_overrides(["-m"], {key: "'/s'"}) == ["hydra.sweep.dir='/s'", "-m"]
