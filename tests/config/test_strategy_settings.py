"""Per-strategy settings in a strategy sweep: ``clframe run -m strategy=naive,replay,ewc
strategies.replay.mem_size=500`` sets replay's buffer in the replay job only, and an experiment's
``strategy_settings:`` block does the same."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cli_helpers import hydra_in_process, run_main

from clframe.cli import run as cli_run
from clframe.config import compose, validate
from clframe.config.strategy_settings import per_strategy
from clframe.errors import ConfigError

SWEEP = ["strategy=naive,replay,ewc", "strategies.replay.mem_size=500"]


@pytest.fixture
def in_process():
    """Undo what running Hydra in-process leaves behind (``cli_helpers.hydra_in_process``)."""
    with hydra_in_process():
        yield


def _configs(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: yaml.safe_load(p.read_text()) for p in sorted(sweep.glob("*/config.yaml"))}


@pytest.fixture
def experiment_dir(tmp_path) -> Path:
    """A config directory with an experiment that sets replay's buffer for the runs choosing replay."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nexperiment_name: mine\nstrategy_settings:\n  replay:\n    mem_size: 500\n")
    return tmp_path


# -- the command form ---------------------------------------------------------------------------

def test_sweep_sets_replay_only_and_resumes(tmp_path, tiny, capsys, monkeypatch, in_process):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "multirun" / "sweep"
    code, out, err = run_main(["run", "-m", *SWEEP, *tiny, f"hydra.sweep.dir={sweep}"], capsys)
    assert code == 0, err
    assert "strategies.replay.mem_size=500: only the 1 of 3 jobs that choose replay (job 1)." in out
    configs = _configs(sweep)
    assert list(configs) == ["0-naive-s0", "1-replay-s0", "2-ewc-s0"]
    assert [list(c["strategies"]) for c in configs.values()] == [["naive"], ["replay"], ["ewc"]]
    assert configs["1-replay-s0"]["strategies"]["replay"]["mem_size"] == 500
    # each job's config is the one the setting written for that job alone gives
    assert configs["1-replay-s0"] == validate(compose(["strategy=replay", "strategies.replay.mem_size=500", *tiny]))
    assert configs["0-naive-s0"] == validate(compose(["strategy=naive", *tiny]))
    # the comparison after the sweep: one group per strategy, nothing of the rewritten form
    table = out[out.rindex("experiment default"):]
    assert all(f"strategies={s}" in table for s in ("naive", "replay", "ewc"))
    assert "strategy_settings" not in table and "mem_size" not in table

    # resume=auto finds each job's own run (its saved config matches only that job's)
    code, out, err = run_main(["run", "-m", *SWEEP, *tiny, "resume=auto", f"hydra.sweep.dir={tmp_path / 'again'}"],
                              capsys)
    assert code == 0, err
    for job in configs:
        assert out.count(f"Resuming multirun/sweep/{job} from ") == 1


def test_a_typo_in_the_setting_names_the_valid_keys(tmp_path, tiny, capsys, in_process):
    code, out, err = run_main(["run", "-m", "strategy=naive,replay,ewc", "strategies.replay.mem_sise=500", *tiny,
                               f"hydra.sweep.dir={tmp_path}"], capsys)
    assert code == 2
    assert "Unknown key 'strategies.replay.mem_sise' for strategy 'replay'. Did you mean 'mem_size'?" in err
    assert "Valid keys: mem_size," in err
    assert list(tmp_path.iterdir()) == []


def test_a_bad_value_is_refused_before_any_job(tmp_path, tiny, capsys, in_process):
    code, out, err = run_main(["run", "-m", "strategy=naive,replay", "strategies.replay.mem_size=big", *tiny,
                               f"hydra.sweep.dir={tmp_path}"], capsys)
    assert code == 2 and "'strategies.replay.mem_size' must be int" in err
    assert list(tmp_path.iterdir()) == []


def test_outside_a_sweep_the_setting_of_an_unchosen_strategy_is_an_error(tmp_path, tiny, capsys, in_process):
    code, out, err = run_main(["run", "strategy=naive", "strategies.replay.mem_size=500", *tiny,
                               f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    assert code == 2
    assert "Unknown key 'strategies.replay.mem_size' ('replay' is not in strategies). Valid keys there: naive." in err
    assert "clframe run -m strategy=naive,replay strategies.replay.mem_size=..." in err
    assert "'+strategies" not in err  # '+' would add replay to the run: not the fix
    assert not (tmp_path / "run").exists()


def test_a_setting_of_a_strategy_the_sweep_does_not_choose_is_an_error(tmp_path, tiny, capsys, in_process):
    code, out, err = run_main(["run", "-m", "strategy=naive,replay", "strategies.ewc.ewc_lambda=5", *tiny,
                               f"hydra.sweep.dir={tmp_path}"], capsys)
    assert code == 2 and "Unknown key 'strategies.ewc.ewc_lambda'" in err and "strategy=naive,ewc" in err


def test_sweeping_the_setting_itself_is_refused():
    with pytest.raises(ConfigError, match="would run once per value") as e:
        per_strategy(["strategy=naive,replay", "strategies.replay.mem_size=100,500"])
    assert "clframe run -m strategy=replay strategies.replay.mem_size=100,500" in str(e.value)


def test_settings_of_a_strategy_every_job_chooses_stay_as_written():
    assert per_strategy(["strategy=replay,[replay,ewc]", "strategies.replay.mem_size=500"]) == []
    assert per_strategy(["strategy=naive", "strategies.replay.mem_size=500"]) == []  # not a sweep: the old error
    (p,) = per_strategy(["strategy=naive,[replay,ewc]", "strategies.replay.mem_size=500", "seed=0,1"])
    assert p.rewritten == "++strategy_settings.replay.mem_size=500"


# -- the experiment form ------------------------------------------------------------------------

def test_experiment_settings_apply_to_the_runs_choosing_the_strategy(experiment_dir):
    search = f"hydra.searchpath=[file://{experiment_dir}]"
    naive, replay, both = cli_run._precheck([search, "experiment=mine", "strategy=naive,replay,[replay,ewc]"], True)
    assert list(naive["strategies"]) == ["naive"] and "strategy_settings" not in naive
    assert replay["strategies"]["replay"]["mem_size"] == 500 and "strategy_settings" not in replay
    assert both["strategies"]["replay"]["mem_size"] == 500 and list(both["strategies"]) == ["replay", "ewc"]
    # the command line wins over the experiment: in a sweep as written, in a single run as strategy_settings
    overrides, _, _ = cli_run._per_strategy([search, "experiment=mine", "strategy=naive,replay",
                                             "strategies.replay.mem_size=300"], [])
    assert cli_run._precheck(overrides, True)[1]["strategies"]["replay"]["mem_size"] == 300
    c = validate(compose([search, "experiment=mine", "strategy=replay", "strategy_settings.replay.mem_size=300"]))
    assert c["strategies"]["replay"]["mem_size"] == 300
    # strategies.replay.mem_size=300 would be merged under the experiment's 500: refused, not lost
    with pytest.raises(ConfigError, match=r"would not apply: .* Set strategy_settings.replay.mem_size=\.\.\. instead"):
        compose([search, "experiment=mine", "strategy=replay", "strategies.replay.mem_size=300"])


def test_experiment_settings_are_checked_where_the_strategy_is_not_chosen(experiment_dir):
    mine = experiment_dir / "experiment" / "mine.yaml"
    search = f"hydra.searchpath=[file://{experiment_dir}]"
    mine.write_text(mine.read_text().replace("mem_size", "mem_sise"))
    with pytest.raises(ConfigError, match=r"Unknown key 'strategy_settings.replay.mem_sise' for strategy 'replay'. "
                                          r"Did you mean 'mem_size'\? Valid keys: mem_size,"):
        validate(compose([search, "experiment=mine", "strategy=naive"]))
    mine.write_text(mine.read_text().replace("replay:", "replya:"))
    with pytest.raises(ConfigError, match=r"Unknown strategy 'replya' in 'strategy_settings.replya'. "
                                          r"Did you mean 'replay'\? Valid: .*ewc.*naive"):
        validate(compose([search, "experiment=mine", "strategy=naive"]))
