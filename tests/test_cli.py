"""The ``clframe`` command: run (and sweep), validate, list, compare; user errors exit 2
with a one-line message instead of a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
from cli_helpers import hydra_in_process, run_main

from clframe import cli

CLFRAME = Path(sys.executable).with_name("clframe")
SWEEP = ["experiment=split_digits", "strategy=naive,replay", "seed=0", "scenario.n_experiences=2",
         "backbone.hidden=[16]", "train.epochs=1", "logger.progress=false"]


@pytest.fixture
def clean_process():
    with hydra_in_process():
        yield




@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A two-job sweep (naive, replay) run through the CLI once; its stdout is kept in stdout.txt."""
    out = tmp_path_factory.mktemp("sweep")
    buf = StringIO()
    with hydra_in_process(), redirect_stdout(buf):
        cli.main(["run", "-m", *SWEEP, f"hydra.sweep.dir={out}"])
    (out / "stdout.txt").write_text(buf.getvalue())
    return out


# -- subprocess: the installed console script ----------------------------------------------------

def test_user_error_exits_2_without_a_traceback(tmp_path):
    assert CLFRAME.exists()
    p = subprocess.run([str(CLFRAME), "run", "train.lrr=1"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "WANDB_MODE": "offline"})
    assert p.returncode == 2
    assert p.stderr.startswith("error: ")
    assert "'train.lrr'" in p.stderr and "Did you mean 'lr'?" in p.stderr
    assert "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was run or written


# -- run -m (sweep) ------------------------------------------------------------------------------

def test_sweep_writes_one_run_dir_per_job(sweep_dir):
    runs = sorted(p.parent for p in sweep_dir.rglob("summary.json"))
    assert [p.name for p in runs] == ["0-naive-s0", "1-replay-s0"]
    for run, strategy in zip(runs, ["naive", "replay"]):
        for name in ("config.yaml", "metrics.csv", "summary.json"):
            assert (run / name).is_file()
        summary = json.loads((run / "summary.json").read_text())
        assert summary["strategies"] == [strategy]
        assert summary["experiment_name"] == "split_digits"
        assert len(summary["acc_matrix"]) == 2
        assert (run / "metrics.csv").read_text().startswith("step,experience,eval_experience,acc,loss")


def test_sweep_prints_each_run_and_a_comparison_table(sweep_dir):
    out = (sweep_dir / "stdout.txt").read_text()
    assert out.count("accuracy matrix") == 2
    table = out[out.rindex("experiment "):]
    assert "final_avg_acc" in table and "avg_forgetting" in table
    assert "split_digits" in table
    assert "naive" in table and "replay" in table
    assert (sweep_dir / "comparison.csv").is_file()  # written into the sweep dir after the sweep
    assert (sweep_dir / "comparison.png").is_file()


def test_run_precheck_fails_before_any_job(tmp_path, capsys, clean_process):
    code, out, err = run_main(["run", "-m", "strategy=naive,replya", f"hydra.sweep.dir={tmp_path}"], capsys)
    assert code == 2
    assert "Unknown strategy option 'replya'" in err and "Did you mean 'replay'?" in err
    assert list(tmp_path.iterdir()) == []


# -- validate ------------------------------------------------------------------------------------

def test_validate_prints_the_config_and_ok(capsys):
    code, out, err = run_main(["validate", "experiment=split_digits", "strategy=replay"], capsys)
    assert code == 0
    assert "experiment_name: split_digits" in out
    assert "mem_size: 200" in out
    ok = [line for line in out.splitlines() if line.startswith("OK: ")]
    assert len(ok) == 1
    assert "5 experiences" in ok[0] and "strategies: replay" in ok[0]


def test_validate_reports_a_bad_value(capsys):
    code, out, err = run_main(["validate", "strategy=replay", "strategies.replay.mem_size=big"], capsys)
    assert code == 2
    assert "'strategies.replay.mem_size' must be int" in err
    assert "OK" not in out


def test_validate_touches_neither_the_network_nor_the_disk(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # the default avalanche benchmark (SplitMNIST) has no data here, and validate never downloads it
    code, out, err = run_main(["validate", "scenario=avalanche", "scenario.download=true"], capsys)
    assert code == 2 and "Traceback" not in err and "OK" not in out
    assert "SplitMNIST" in err and "clframe validate` never downloads" in err
    assert list(tmp_path.iterdir()) == []  # no data/avalanche/MNIST/raw, nothing else


# -- list ----------------------------------------------------------------------------------------

def test_list_shows_components_parameters_and_defaults(capsys):
    code, out, _ = run_main(["list"], capsys)
    assert code == 0
    for name in ("mlp", "linear", "multihead", "naive", "ewc", "replay", "split", "permuted", "rotated",
                 "avalanche", "digits", "mnist1d"):
        assert f"  {name}  (" in out
    assert "ewc_lambda: float (>= 0) = 100.0" in out
    assert "mem_size: int = 200" in out
    assert "hidden: Sequence[int (>= 1)] = (256, 256)" in out
    assert "activation: one of 'relu', 'tanh', 'gelu', 'leaky_relu', 'sigmoid' = 'relu'" in out
    assert "n_experiences: int = 5" in out
    assert "benchmark: str = 'avalanche.benchmarks.classic:SplitMNIST'" in out
    assert "lr = 0.05" in out  # the run settings too
    assert "config group experiment/: " in out and "split_digits" in out
    for group in ("backbones", "heads", "strategies", "scenarios", "datasets"):
        assert f"entry-point group clframe.{group}" in out  # where a user's package plugs in


# -- compare -------------------------------------------------------------------------------------

def test_compare_prints_a_table(sweep_dir, capsys):
    code, out, _ = run_main(["compare", str(sweep_dir)], capsys)
    assert code == 0
    assert "experiment split_digits: 2 runs in 2 groups" in out
    lines = out.splitlines()
    header = next(line.split() for line in lines if line.split()[:2] == ["group", "seeds"])
    assert header[2:5] == ["final_avg_acc", "avg_forgetting", "bwt"]
    rows = {line.split()[0]: line.split() for line in lines if line.strip().startswith("strategies=")}
    assert set(rows) == {"strategies=naive", "strategies=replay"}
    final_acc = json.loads((sweep_dir / "0-naive-s0" / "summary.json").read_text())["final_avg_acc"]
    assert rows["strategies=naive"][1] == "1"  # one seed: the mean alone
    assert rows["strategies=naive"][2] == f"{final_acc:.3f}"
    assert (sweep_dir / "comparison.csv").is_file() and (sweep_dir / "comparison.png").is_file()


def test_compare_with_nothing_to_compare(tmp_path, capsys):
    code, _, err = run_main(["compare", str(tmp_path)], capsys)
    assert code == 2
    assert "no summary.json found" in err and str(tmp_path) in err


# -- usage ---------------------------------------------------------------------------------------

def test_unknown_command_suggests_one(capsys):
    code, _, err = run_main(["lsit"], capsys)
    assert code == 2
    assert "Unknown command 'lsit'" in err and "Did you mean 'list'?" in err


def test_help(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    assert "clframe run" in out and "clframe compare" in out
