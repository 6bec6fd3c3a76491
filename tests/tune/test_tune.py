"""``clframe tune``: a tiny study end to end, an interrupted study that continues, the search spaces, the
protocols' tuning streams, and what a run returns to the Optuna sweeper."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from cli_helpers import run_main

from clframe.cli.run import objective
from clframe.config import compose, validate
from clframe.errors import ConfigError
from clframe.tune.protocols import PROTOCOLS, get_protocol, tuning_overrides
from clframe.tune.search import SEARCH_DIR, check_space, load_space
from clframe.tune.study import Study, finished_trials

FAST = ["train.epochs=1", "monitors.continual.every=50", "checkpoint.enabled=false"]


def tune(tmp_path, *args: str) -> list[str]:
    return ["tune", "experiment=hpo_split_digits", f"out={tmp_path}", "seeds=1", "reference=false", *FAST, *args]


def test_a_two_trial_study_tunes_on_validation_and_evaluates_on_test(tmp_path, capsys):
    code, out, err = run_main(tune(tmp_path, "protocol=end", "strategies=naive", "trials=2"), capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "end.json").read_text())
    row = result["rows"][0]
    lo, hi = 0.001, 0.3  # configs/search/naive.yaml
    assert set(row["chosen"]) == {"train.lr"} and lo <= row["chosen"]["train.lr"] <= hi
    assert row["gap"] == pytest.approx(row["tuning_score"] - row["eval_mean"])
    trials = list((tmp_path / "end/naive/trials").rglob("summary.json"))
    evals = list((tmp_path / "end/naive").glob("eval-*/*/summary.json"))
    assert len(trials) == 2 and len(evals) == 1
    assert all(json.loads(p.read_text())["scored_on"] == "validation" for p in trials)  # tuning never saw test data
    assert json.loads(evals[0].read_text())["scored_on"] == "test"
    best = max(json.loads(p.read_text())["final_avg_acc"] for p in trials)
    assert row["tuning_score"] == pytest.approx(best)
    assert "| naive |" in out and (tmp_path / "end.md").is_file() and (tmp_path / "end.csv").is_file()


def test_an_interrupted_study_continues_where_it_stopped(tmp_path):
    args = tune(tmp_path, "protocol=test", "strategies=naive", "trials=3")
    study = Study("test-hpo_split_digits-naive", f"sqlite:///{tmp_path / 'studies.db'}", 3)
    cmd = [sys.executable, "-c", "from clframe.cli import main; main()", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not (tmp_path / "studies.db").exists() or len(finished_trials(study)) < 1):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # killed in its second trial: no clean shutdown
    proc.wait()
    first = finished_trials(study)
    assert 1 <= len(first) < 3
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = finished_trials(study)
    assert len(done) == 3  # only the missing trials ran
    assert [t.params for t in done[: len(first)]] == [t.params for t in first]  # the finished ones were kept


def test_a_search_space_with_a_parameter_the_strategy_lacks_names_the_valid_ones(tmp_path, capsys):
    (tmp_path / "ewc.yaml").write_text("strategies.ewc.lamda: tag(log, interval(1, 100))\n")
    code, _, err = run_main(tune(tmp_path, "protocol=end", "strategies=ewc", f"search_dir={tmp_path}"), capsys)
    assert code == 2
    assert "no parameter 'lamda'" in err and "Did you mean 'ewc_lambda'?" in err and "ewc_lambda" in err


def test_every_shipped_search_space_names_real_parameters():
    for path in SEARCH_DIR.glob("*.yaml"):
        space, _ = load_space(path.stem)
        check_space(path.stem, space, path)
        assert all(("interval" in v or "choice" in v or "range" in v) for v in space.values())


def test_a_missing_search_space_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="Shipped: .*ewc"):
        load_space("gdumb")


def test_the_protocols_tune_on_their_streams():
    over = {name: tuning_overrides(p, "hpo_split_mnist", "hpo_split_digits", 0.1, 1) for name, p in PROTOCOLS.items()}
    assert over["test"] == ["experiment=hpo_split_mnist"]
    assert over["end"] == ["experiment=hpo_split_mnist", "scenario.validation=0.1"]
    assert over["first_task"] == ["experiment=hpo_split_mnist", "scenario.validation=0.1",
                                  "scenario.first_experiences=1"]
    assert over["gtep"] == ["experiment=hpo_split_digits", "scenario.validation=0.1"]
    with pytest.raises(ConfigError, match="tune_experiment"):
        tuning_overrides(get_protocol("gtep"), "hpo_split_mnist", None, 0.1, 1)
    with pytest.raises(ConfigError, match="valid: test, end, first_task, gtep"):
        get_protocol("nested")


def test_a_run_returns_its_metric_and_an_unknown_one_lists_the_metrics():
    assert objective({"final_avg_acc": 0.5, "aaa": 0.7}, "aaa") == 0.7
    with pytest.raises(ConfigError, match="final_avg_acc"):
        objective({"final_avg_acc": 0.5, "scenario": "x"}, "final_acc")


def test_the_hpo_streams_share_one_recipe():
    a, b = (validate(compose([f"experiment={e}"])) for e in ("hpo_split_digits", "hpo_split_mnist"))
    for key in ("train", "backbone", "head"):
        assert a[key] == b[key]


def test_a_grid_search_runs_every_combination_of_its_choices(tmp_path, capsys):
    (tmp_path / "naive.yaml").write_text("train.lr: choice(0.01, 0.05)\n")
    args = tune(tmp_path, "protocol=end", "strategies=naive", "sampler=grid", "trials=5", f"search_dir={tmp_path}")
    code, _, err = run_main(args, capsys)
    assert code == 0, err
    lrs = sorted(t.params["train.lr"] for t in finished_trials(
        Study("end-hpo_split_digits-naive", f"sqlite:///{tmp_path / 'studies.db'}", 2)))
    assert lrs == [0.01, 0.05]  # the grid, once each, although 5 trials were allowed


def test_grid_refuses_a_continuous_dimension(tmp_path, capsys):
    code, _, err = run_main(tune(tmp_path, "protocol=end", "strategies=naive", "sampler=grid"), capsys)
    assert code == 2 and "continuous ones: train.lr" in err


@pytest.mark.slow
def test_trials_run_in_parallel_through_the_submitit_launcher(tmp_path, capsys):
    args = tune(tmp_path, "protocol=end", "strategies=naive", "trials=2", "hydra/launcher=submitit_local",
                "hydra.sweeper.n_jobs=2")
    code, _, err = run_main(args, capsys)
    assert code == 0, err
    log = (tmp_path / "end/naive/trials/trials.log").read_text()
    assert "Launching 2 jobs" in log or "submitit" in log.lower()
    assert len(finished_trials(Study("end-hpo_split_digits-naive", f"sqlite:///{tmp_path / 'studies.db'}", 2))) == 2
