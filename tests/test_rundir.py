"""Run directories never collide: generated names are unique and claimed atomically, an explicit
directory that holds another run is refused, and a directory that cannot be written is named with
its cause before anything runs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from cli_helpers import run_main

from clframe.errors import ConfigError, StorageError
from clframe.run.rundir import claim, holds_run, launched_child, remove_if_unused, short_hash


def test_racing_claims_of_one_name_get_a_directory_each(tmp_path):
    wanted = tmp_path / "runs" / "exp" / "naive-s0-20261202-101500-abc123"
    got: list[Path] = []
    barrier = threading.Barrier(8)

    def one() -> None:
        barrier.wait()
        got.append(claim(wanted, unique=True)[0])

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8 and all(p.is_dir() for p in got)
    assert sorted(p.name for p in got) == sorted([wanted.name] + [f"{wanted.name}-{i}" for i in range(2, 9)])


def test_an_explicit_directory_is_used_unless_it_holds_a_run(tmp_path):
    mine = tmp_path / "results" / "mine"
    assert claim(mine, unique=False) == (mine, True)
    assert claim(mine, unique=False) == (mine, False)  # empty: still free, not created by this call
    (mine / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match=rf"^{mine} already holds a run .* resume={mine}"):
        claim(mine, unique=False)
    sweep = tmp_path / "sweep"
    (sweep / "0-naive-s0").mkdir(parents=True)
    (sweep / "0-naive-s0" / "summary.json").write_text("{}")
    assert holds_run(sweep)  # a sweep directory holds its runs one level down
    with pytest.raises(ConfigError, match="already holds a run"):
        claim(sweep, unique=False)


def test_a_directory_that_cannot_be_created_is_named_with_the_cause(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StorageError, match=rf"^Cannot create the directory {tmp_path / 'afile'}: File exists|"
                                           rf"^Cannot create the directory {tmp_path / 'afile'}: Not a directory"):
        claim(tmp_path / "afile" / "run", unique=True)
    with pytest.raises(StorageError, match=r"it is a file"):
        claim(tmp_path / "afile", unique=False)


def test_an_unused_directory_is_removed_and_a_used_one_kept(tmp_path):
    unused, used = tmp_path / "a", tmp_path / "b"
    (unused / ".hydra").mkdir(parents=True)
    (unused / ".hydra" / "config.yaml").write_text("seed: 0\n")  # Hydra's record, not a result
    (unused / "launch.log").write_text("")
    (used / ".hydra").mkdir(parents=True)
    (used / "config.yaml").write_text("seed: 0\n")
    remove_if_unused(unused)
    remove_if_unused(used)
    assert not unused.exists() and (used / "config.yaml").exists()


def test_short_hash_depends_on_the_content_only():
    assert short_hash({"a": 1, "b": [1, 2]}) == short_hash({"b": [1, 2], "a": 1})
    assert short_hash({"train": {"lr": 0.05}}) != short_hash({"train": {"lr": 0.01}})
    assert len(short_hash({})) == 6


@pytest.mark.parametrize("env, child", [({}, False), ({"LOCAL_RANK": "0"}, False), ({"LOCAL_RANK": "1"}, True),
                                        ({"RANK": "3"}, True), ({"SLURM_NTASKS": "2", "SLURM_PROCID": "1"}, True),
                                        ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, False)])
def test_processes_of_other_ranks_do_not_claim(monkeypatch, env, child):
    for k in ("LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert launched_child() is child


def test_runs_of_one_experiment_keep_their_own_directories(tiny, tmp_path, monkeypatch,
                                                                                   capsys):
    monkeypatch.chdir(tmp_path)
    base = [*tiny, "experiment_name=twice", "monitors.continual.enabled=false"]
    for lr in ("0.05", "0.01", "0.05"):  # the third has the first's config: it gets the next free name
        code, _, err = run_main(["run", *base, f"train.lr={lr}"], capsys)
        assert code == 0, err
    runs = sorted((tmp_path / "runs" / "twice").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert len(runs) == 3  # in the same second or not (the race itself is tested on claim above)
    hashes = [r.name.split("-")[4] for r in runs]  # naive-s0-<date>-<time>-<hash>[-n]
    assert hashes[0] == hashes[2] != hashes[1]  # the hash is the config's
    for r, lr in zip(runs, (0.05, 0.01, 0.05)):
        assert f"lr: {lr}" in (r / "config.yaml").read_text() and (r / "summary.json").exists()


def test_a_run_refused_before_training_leaves_no_directory(tmp_path, monkeypatch, capsys):
    from clframe.config.registry import SCENARIOS

    monkeypatch.chdir(tmp_path)
    SCENARIOS.register("test_rundir_not_a_scenario")(lambda: (1, 2))  # refused in the build, after the claim
    try:
        code, _, err = run_main(["run", "scenario=custom", "scenario.name=test_rundir_not_a_scenario",
                                 "logger.progress=false"], capsys)
    finally:
        SCENARIOS._items.pop("test_rundir_not_a_scenario")
    assert code == 2 and "returned tuple, not a Scenario" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "default").exists() or not any((tmp_path / "runs" / "default").iterdir())


def test_an_explicit_directory_that_holds_a_run_is_refused_before_training(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["run", *tiny, "monitors.continual.enabled=false", "hydra.run.dir=mine"], capsys)
    assert code == 0, err
    before = (tmp_path / "mine" / "summary.json").read_bytes()
    code, _, err = run_main(["run", *tiny, "monitors.continual.enabled=false", "train.lr=0.01",
                             "hydra.run.dir=mine"], capsys)
    assert code == 2 and "already holds a run" in err and "resume=" in err
    assert (tmp_path / "mine" / "summary.json").read_bytes() == before
