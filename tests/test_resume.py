"""Resuming a run from a checkpoint continues it bit for bit, and ``resume=`` refuses what it must.

An interrupted run is simulated by copying a finished run's directory and deleting its
checkpoints after step ``k`` (and the files written at the end): resuming the copy must
then give the same summary, the same metrics.csv and the same final state, tensor for
tensor, as the run that was never interrupted, and as a run that never checkpointed.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from clframe.checkpoint.files import atomic_save, checkpoint_dir, checkpoint_name, list_checkpoints, load_checkpoint
from clframe.config import compose
from clframe.config.registry import STRATEGIES
from clframe.core.strategy import Strategy
from clframe.errors import CheckpointError, RunInterrupted
from clframe.run.results import TIMING_KEYS
from clframe.run.runner import build, run

# the conftest's ``tiny`` overrides: 2 experiences of 22 steps each
TINY = ["scenario.n_experiences=2", "backbone.hidden=[32]", "train.epochs=1", "logger.progress=false"]
KEEP_ALL = ["checkpoint.keep=1000"]
# summary keys that measure time or name places, not results
UNCOMPARED = TIMING_KEYS
# what a checkpoint holds besides its config (which names resume= in a resumed run)
STATE_KEYS = ("step", "experience", "finished", "module", "rng", "monitors", "recorder")

CASES = {
    # dropout draws from the global torch RNG: its state must come back exactly
    "naive": ["backbone.dropout=0.3", "train.momentum=0.9", "checkpoint.every=7"],
    "ewc_online": ["strategy=ewc", "strategies.ewc.mode=online", "train.momentum=0.9", "checkpoint.every=7"],
    # every=11 also saves at the boundary step 22 before the experience ends; the boundary save then
    # rewrites step-00000022.ckpt with the ended experience
    "replay": ["strategy=replay", "backbone.dropout=0.1", "checkpoint.every=11"],
    # two epochs per experience: a resume inside the second epoch re-enters the right shuffle
    "naive_epochs2": ["train.epochs=2", "train.momentum=0.9", "checkpoint.every=9"],
    # a strategy that sends SIGTERM at a chosen step (armed only in the run to interrupt)
    "stop": ["+strategies.stop_at={}", "backbone.dropout=0.2", "train.momentum=0.9", "checkpoint.every=7"],
    "replay_fabric": ["strategy=replay", "backbone.dropout=0.2", "trainer.engine=fabric", "checkpoint.every=7"],
    # the Kalman head's posterior and learned gamma/noise/temperature, and the online metrics' windows
    "kalman": ["head=kalman", "monitors.online.enabled=true", "monitors.online.window=5", "checkpoint.every=7"],
    "kalman_frozen_fabric": ["head=kalman", "train.freeze_backbone=true", "trainer.engine=fabric",
                             "monitors.online.enabled=true",
                             "checkpoint.every=7"],
}


# -- helpers -------------------------------------------------------------------------------------

def replace(overrides: list[str], change: str) -> list[str]:
    """``overrides`` with ``change`` instead of any override of the same key."""
    key = change.split("=", 1)[0]
    return [o for o in overrides if o.split("=", 1)[0] != key] + [change]


def case_overrides(case: str, keep_all: bool = True) -> list[str]:
    """The overrides of ``case``: ``TINY`` changed by ``CASES[case]`` (and all checkpoints kept)."""
    over = list(TINY)
    for change in CASES[case] + (KEEP_ALL if keep_all else []):
        over = replace(over, change)
    return over


def comparable(summary: dict[str, Any]) -> str:
    """The summary without timings and paths, as exact text (NaN compares equal to NaN)."""
    return json.dumps({k: v for k, v in summary.items() if k not in UNCOMPARED}, sort_keys=True)


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """``a`` and ``b`` are equal, tensors bit for bit (dtype and shape included)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and a != a:
        assert isinstance(b, float) and b != b, where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def final_state(run_dir: Path) -> dict[str, Any]:
    return load_checkpoint(list_checkpoints(run_dir)[-1][1])


def boundary_steps(run_dir: Path) -> list[int]:
    """The step of each experience end, from metrics.csv's boundary rows."""
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "boundary"]
    ends = {int(r["experience"]): int(r["step"]) for r in rows}
    return [ends[e] for e in sorted(ends)]


def interrupt(src: Path, dst: Path, step: int) -> Path:
    """A copy of run ``src`` as if it had been killed after writing its checkpoint of ``step``."""
    shutil.copytree(src, dst)
    for s, p in list_checkpoints(dst):
        if s > step:
            p.unlink()
    for name in ("summary.json", "metrics.csv"):
        (dst / name).unlink()
    shutil.rmtree(dst / "plots", ignore_errors=True)
    assert list_checkpoints(dst)[-1][0] == step
    return dst


def assert_same_run(ref_dir: Path, ref: dict[str, Any], other_dir: Path, other: dict[str, Any]) -> None:
    assert comparable(other) == comparable(ref)
    assert json.loads((other_dir / "summary.json").read_text()) == json.loads(json.dumps(other))
    assert (other_dir / "metrics.csv").read_bytes() == (ref_dir / "metrics.csv").read_bytes()
    a, b = final_state(ref_dir), final_state(other_dir)
    for key in STATE_KEYS:
        assert_same(a[key], b[key], key)


class Reference:
    """One uninterrupted run per case (checkpoints every few steps, all kept), shared by the module."""

    def __init__(self, root: Path) -> None:
        self.root, self.runs = root, {}

    def __call__(self, case: str) -> tuple[Path, dict[str, Any]]:
        if case not in self.runs:
            run_dir = self.root / case
            self.runs[case] = (run_dir, run(compose(case_overrides(case)), run_dir))
        return self.runs[case]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return Reference(tmp_path_factory.mktemp("reference"))


def resume_points(ref_dir: Path, point: str) -> int:
    steps = [s for s, _ in list_checkpoints(ref_dir)]
    ends = boundary_steps(ref_dir)
    assert len(ends) == 2 and steps[-1] == ends[-1]
    if point == "boundary":
        k = ends[0]
        state = load_checkpoint(checkpoint_dir(ref_dir) / checkpoint_name(k))
        counters = state["module"]["counters"]
        # the checkpoint written at the end of experience 0, after its boundary evaluation
        assert state["experience"] == 0 and counters["exp_ended"] is True and counters["cl_step"] == k
        assert len(state["module"]["records"]["acc_matrix"]) == 1
        return k
    inside = [s for s in steps if s not in ends]
    if point == "mid_exp0":
        return max(s for s in inside if s < ends[0])
    return max(s for s in inside if ends[0] < s < ends[1])  # mid_exp1


# -- bit-identical resume ------------------------------------------------------------------------

@pytest.mark.parametrize("case, point", [
    *((case, point) for case in ("naive", "ewc_online", "replay") for point in ("mid_exp0", "boundary", "mid_exp1")),
    ("naive_epochs2", "mid_exp0"), ("naive_epochs2", "mid_exp1"),
    ("kalman", "mid_exp0"), ("kalman", "mid_exp1"), ("kalman_frozen_fabric", "mid_exp1"),
])
def test_resume_is_bit_identical(reference, tmp_path, case, point):
    ref_dir, ref = reference(case)
    k = resume_points(ref_dir, point)
    copy = interrupt(ref_dir, tmp_path / "copy", k)
    resumed = run(compose(case_overrides(case) + [f"resume={copy}"]), tmp_path / "unused")
    assert not (tmp_path / "unused").exists()  # a resumed run continues in its own directory
    assert resumed["resumed_from"] == str(checkpoint_dir(copy) / checkpoint_name(k))
    assert resumed["run_dir"] == str(copy) and resumed["steps"] == ref["steps"] == (88 if "epochs2" in case else 44)
    assert_same_run(ref_dir, ref, copy, resumed)
    # the resumed run wrote the checkpoints after k again
    assert [s for s, _ in list_checkpoints(copy)] == [s for s, _ in list_checkpoints(ref_dir)]


@pytest.mark.parametrize("point", ["mid_exp0", "boundary"])
def test_resume_under_fabric_is_bit_identical(reference, tmp_path, point):
    ref_dir, ref = reference("replay_fabric")
    k = resume_points(ref_dir, point)
    copy = interrupt(ref_dir, tmp_path / "copy", k)
    resumed = run(compose(case_overrides("replay_fabric") + [f"resume={copy}"]), tmp_path / "unused")
    assert_same_run(ref_dir, ref, copy, resumed)


def test_resume_under_the_other_engine_is_bit_identical(reference, tmp_path):
    # trainer.engine may change on resume: a run started under Trainer continues under Fabric
    ref_dir, ref = reference("ewc_online")
    copy = interrupt(ref_dir, tmp_path / "copy", 14)
    over = case_overrides("ewc_online") + ["trainer.engine=fabric", f"resume={copy}"]
    resumed = run(compose(over), tmp_path / "unused")
    assert_same_run(ref_dir, ref, copy, resumed)


@pytest.mark.parametrize("case", ["naive", "replay"])
def test_checkpointing_does_not_change_results(reference, tmp_path, case):
    ref_dir, ref = reference(case)
    plain = run(compose(case_overrides(case, keep_all=False) + ["checkpoint.enabled=false"]), tmp_path)
    assert not checkpoint_dir(tmp_path).exists()
    assert plain["checkpoint_mb"] is None and plain["checkpoint_save_s"] is None
    assert comparable(plain) == comparable(ref)
    assert (tmp_path / "metrics.csv").read_bytes() == (ref_dir / "metrics.csv").read_bytes()


def test_resume_from_an_older_checkpoint_file(reference, tmp_path):
    # resume=<file> continues from that file even when newer ones exist, and overwrites them
    ref_dir, ref = reference("naive")
    copy = interrupt(ref_dir, tmp_path / "copy", 35)
    (copy / "config.yaml").unlink()
    start = checkpoint_dir(copy) / checkpoint_name(14)
    resumed = run(compose(case_overrides("naive") + [f"resume={start}"]), tmp_path / "unused")
    assert resumed["resumed_from"] == str(start)
    assert_same_run(ref_dir, ref, copy, resumed)


def test_resume_falls_back_past_a_corrupt_last_checkpoint(reference, tmp_path):
    ref_dir, ref = reference("replay")
    copy = interrupt(ref_dir, tmp_path / "copy", 33)
    last = checkpoint_dir(copy) / checkpoint_name(33)
    last.write_bytes(last.read_bytes()[:1000])  # killed mid-write without atomic rename, or a bad disk
    with pytest.warns(UserWarning, match="Skipped unreadable newer checkpoints"):
        resumed = run(compose(case_overrides("replay") + [f"resume={copy}"]), tmp_path / "unused")
    assert resumed["resumed_from"] == str(checkpoint_dir(copy) / checkpoint_name(22))
    assert_same_run(ref_dir, ref, copy, resumed)


def test_resume_from_the_command_line_takes_untouched_settings_from_the_checkpoint(reference, tmp_path):
    # `clframe run resume=<dir>`: the config composed from the overrides alone is the default one
    ref_dir, ref = reference("ewc_online")
    copy = interrupt(ref_dir, tmp_path / "copy", 28)
    overrides = [f"resume={copy}"]
    resumed = run(compose(overrides), tmp_path / "unused", overrides=overrides)
    assert_same_run(ref_dir, ref, copy, resumed)


class StopAt(Strategy):
    """Sends this process SIGTERM after the optimizer step that makes ``cl_step`` the first of
    ``ARMED`` (each armed step fires once); does nothing else."""

    ARMED: list[int] = []

    def after_optimizer_step(self, ctx):
        if StopAt.ARMED and ctx.step + 1 == StopAt.ARMED[0]:
            StopAt.ARMED.pop(0)
            # the run's StopRequest handles it; with the default handler it would kill pytest
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
            signal.raise_signal(signal.SIGTERM)


@pytest.fixture
def stop_at(monkeypatch):
    STRATEGIES.names()  # load the built-ins first
    monkeypatch.setitem(STRATEGIES._items, "stop_at", StopAt)
    monkeypatch.setattr(StopAt, "ARMED", [])
    return StopAt.ARMED


@pytest.mark.parametrize("engine", ["trainer", "fabric"])
def test_sigterm_stops_with_a_checkpoint_and_the_resumed_run_is_bit_identical(reference, tmp_path, stop_at, engine):
    ref_dir, ref = reference("stop")  # the same config, never stopped
    over = replace(case_overrides("stop"), f"trainer.engine={engine}")
    run_dir = tmp_path / "run"
    stop_at.append(17)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted) as e:
        run(compose(over), run_dir)
    assert signal.getsignal(signal.SIGTERM) is previous  # the handlers are given back
    assert e.value.signum == signal.SIGTERM and e.value.run_dir == str(run_dir)
    assert e.value.checkpoint == str(checkpoint_dir(run_dir) / checkpoint_name(17))
    assert f"resume={run_dir}" in str(e.value)
    assert [s for s, _ in list_checkpoints(run_dir)] == [7, 14, 17]
    assert not (run_dir / "summary.json").exists() and (run_dir / "metrics.csv").exists()
    assert not stop_at

    resumed = run(compose(over + [f"resume={run_dir}"]), tmp_path / "unused")
    assert resumed["resumed_from"] == e.value.checkpoint
    assert_same_run(ref_dir, ref, run_dir, resumed)


# -- finished runs and resume=auto ---------------------------------------------------------------

def test_resuming_a_finished_run_rewrites_the_same_summary(reference, tmp_path):
    ref_dir, ref = reference("replay")
    copy = tmp_path / "copy"
    shutil.copytree(ref_dir, copy)
    before = {p.name: p.stat().st_mtime_ns for p in checkpoint_dir(copy).iterdir()}
    (copy / "summary.json").unlink()
    again = run(compose(case_overrides("replay") + [f"resume={copy}"]), tmp_path / "unused")
    assert again["resumed_from"] == str(checkpoint_dir(copy) / checkpoint_name(44))
    assert comparable(again) == comparable(ref)
    assert json.loads((copy / "summary.json").read_text()) == json.loads(json.dumps(again))
    assert (copy / "metrics.csv").read_bytes() == (ref_dir / "metrics.csv").read_bytes()
    # nothing was trained or saved again
    assert {p.name: p.stat().st_mtime_ns for p in checkpoint_dir(copy).iterdir()} == before
    assert again["checkpoint_save_s"] is None


def test_resume_auto_picks_the_latest_run_of_the_same_config(reference, tmp_path, monkeypatch):
    ref_dir, ref = reference("naive")
    monkeypatch.chdir(tmp_path)
    over = case_overrides("naive")
    now = time.time()
    # a finished run of the same config, an interrupted one, newer, and a newer run of another config
    finished = tmp_path / "runs" / "quick" / "a"
    shutil.copytree(ref_dir, finished)
    latest = interrupt(ref_dir, tmp_path / "multirun" / "quick" / "20260101" / "0-naive-s0", 14)
    other = interrupt(ref_dir, tmp_path / "runs" / "quick" / "other-seed", 21)
    text = (other / "config.yaml").read_text()
    assert "seed: 0\n" in text
    (other / "config.yaml").write_text(text.replace("seed: 0\n", "seed: 5\n", 1))
    for run_dir, age in ((finished, 300), (latest, 200), (other, 100)):
        os.utime(list_checkpoints(run_dir)[-1][1], (now - age, now - age))

    resumed = run(compose(over + ["resume=auto"]), "runs/quick/new")
    assert not Path("runs/quick/new").exists()
    assert Path(resumed["resumed_from"]).resolve() == checkpoint_dir(latest).resolve() / checkpoint_name(14)
    assert_same_run(ref_dir, ref, latest, resumed)


def test_resume_auto_without_an_earlier_run_starts_a_new_one(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # a run of another config does not count, nor does a run without checkpoints
    run(compose(tiny + ["seed=1"]), "runs/x/seed1")
    run(compose(tiny + ["checkpoint.enabled=false"]), "runs/x/no-checkpoints")
    capsys.readouterr()
    summary = run(compose(tiny + ["resume=auto"]), "runs/x/fresh")
    assert "starting a new run" in capsys.readouterr().out
    assert summary["resumed_from"] is None and summary["run_dir"] == "runs/x/fresh"
    assert (tmp_path / "runs/x/fresh/summary.json").exists()
    assert list_checkpoints(tmp_path / "runs/x/fresh")


def test_resume_auto_with_no_runs_directory_at_all(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = run(compose(tiny + ["resume=auto", "checkpoint.enabled=false"]), tmp_path / "fresh")
    assert summary["resumed_from"] is None and summary["steps"] == 44


# -- what resume= refuses -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def interrupted(reference, tmp_path_factory):
    """A run of case ``naive`` stopped at step 14 (not to be resumed: tests that use it must fail)."""
    ref_dir, _ = reference("naive")
    return interrupt(ref_dir, tmp_path_factory.mktemp("interrupted") / "run", 14)


@pytest.mark.parametrize("change, key", [
    ("train.lr=0.1", "train.lr"),
    ("seed=3", "seed"),
    ("backbone.hidden=[16]", "backbone.hidden"),
    ("strategy=ewc", "strategies.ewc"),
    ("scenario.n_experiences=3", "scenario.n_experiences"),
])
@pytest.mark.parametrize("as_cli", [False, True])
def test_resume_with_a_changed_training_setting_names_the_key(interrupted, tmp_path, change, key, as_cli):
    over = replace(case_overrides("naive"), change) + [f"resume={interrupted}"]
    before = sorted(p.name for p in checkpoint_dir(interrupted).iterdir())
    with pytest.raises(CheckpointError) as e:
        run(compose(over), tmp_path / "unused", overrides=over if as_cli else None)
    msg = str(e.value)
    assert f"{key}" in msg and "different config" in msg and "in the checkpoint" in msg
    assert "train.lr" not in msg or key == "train.lr"  # only what changed is named
    assert sorted(p.name for p in checkpoint_dir(interrupted).iterdir()) == before
    assert not (tmp_path / "unused").exists()


def test_changed_training_setting_message(interrupted, tmp_path):
    with pytest.raises(CheckpointError) as e:
        run(compose(case_overrides("naive") + ["train.lr=0.1", f"resume={interrupted}"]), tmp_path)
    assert "train.lr: 0.05 in the checkpoint, 0.1 now" in str(e.value)


def test_resume_may_change_logger_and_checkpoint_settings(reference, tmp_path):
    ref_dir, ref = reference("naive")
    copy = interrupt(ref_dir, tmp_path / "copy", 14)
    over = case_overrides("naive", keep_all=False)
    for change in ("checkpoint.keep=2", "checkpoint.every=5", "logger.project=elsewhere", "train.num_threads=1"):
        over = replace(over, change)
    over += [f"resume={copy}"]
    resumed = run(compose(over), tmp_path / "unused")
    assert comparable(resumed) == comparable(ref)
    assert (copy / "metrics.csv").read_bytes() == (ref_dir / "metrics.csv").read_bytes()
    assert_same(final_state(ref_dir)["module"], final_state(copy)["module"], "module")
    # the new settings apply: saves every 5 steps from 14 on, 2 kept
    assert [s for s, _ in list_checkpoints(copy)] == [40, 44]
    assert "keep: 2" in (copy / "config.yaml").read_text()


def test_checkpoint_of_another_model_does_not_fit(reference, tmp_path):
    ref_dir, _ = reference("naive")
    copy = interrupt(ref_dir, tmp_path / "copy", 14)
    # same config, other weights: as if the backbone's code had changed since the checkpoint
    other = build(compose(replace(case_overrides("naive"), "backbone.hidden=[16]"))).module.state_dict()
    path = checkpoint_dir(copy) / checkpoint_name(14)
    state = load_checkpoint(path)
    state["module"]["model"] = other
    atomic_save(state, path)
    with pytest.raises(CheckpointError) as e:
        run(compose(case_overrides("naive") + [f"resume={copy}"]), tmp_path / "unused")
    msg = str(e.value)
    assert "does not fit this model" in msg and str(path) in msg
    assert "shape mismatch backbone.net.1.weight (16, 64) vs (32, 64)" in msg

    del state["module"]["model"]["head.fc.bias"]
    state["module"]["model"]["head.extra"] = torch.zeros(1)
    atomic_save(state, path)
    with pytest.raises(CheckpointError, match="does not fit this model") as e:
        run(compose(case_overrides("naive") + [f"resume={copy}"]), tmp_path / "unused")
    assert "missing head.fc.bias" in str(e.value) and "unexpected head.extra" in str(e.value)


def test_resume_of_nothing(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="no such run directory or checkpoint file"):
        run(compose(tiny + [f"resume={tmp_path / 'nope'}"]), tmp_path / "unused")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoints in"):
        run(compose(tiny + [f"resume={tmp_path / 'empty'}"]), tmp_path / "unused")


def test_resume_auto_reads_the_config_from_the_checkpoints_when_config_yaml_is_unreadable(reference, tmp_path,
                                                                                          monkeypatch, capsys):
    ref_dir, ref = reference("naive")
    monkeypatch.chdir(tmp_path)
    broken = interrupt(ref_dir, tmp_path / "runs" / "quick" / "broken", 14)
    (broken / "config.yaml").write_text(": [not yaml")
    resumed = run(compose(case_overrides("naive") + ["resume=auto"]), "runs/quick/new")
    assert "comes from its checkpoint step-00000014.ckpt (config.yaml is unreadable" in capsys.readouterr().out
    assert not Path("runs/quick/new").exists()
    assert_same_run(ref_dir, ref, broken, resumed)
    assert "seed: 0" in (broken / "config.yaml").read_text()  # written again by the resumed run


def test_resume_auto_stops_when_a_run_s_config_cannot_be_read_at_all(reference, tmp_path, monkeypatch):
    ref_dir, _ = reference("naive")
    monkeypatch.chdir(tmp_path)
    lost = interrupt(ref_dir, tmp_path / "runs" / "quick" / "lost", 14)
    (lost / "config.yaml").unlink()
    for _, p in list_checkpoints(lost):
        p.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"resume=auto: no run of this config was found, but the config of "
                                              r"these runs cannot be read.*lost: config.yaml is missing"):
        run(compose(case_overrides("naive") + ["resume=auto"]), "runs/quick/new")
    assert not Path("runs/quick/new").exists()


def test_a_config_saved_before_split_across_ranks_keeps_its_old_meaning():
    from clframe.checkpoint.resume import upgrade

    old = {"trainer": {"accelerator": "cpu", "devices": 2, "num_nodes": 1}}
    assert upgrade(old)["trainer"]["split_across_ranks"] is False  # each rank took train.batch_size
    assert "split_across_ranks" not in old["trainer"]  # a copy
    assert upgrade({"trainer": {"devices": 1, "num_nodes": 1}})["trainer"]["split_across_ranks"] is True
    new = {"trainer": {"devices": 2, "num_nodes": 1, "split_across_ranks": True}, "monitors": {}}
    assert upgrade(new) == new


def test_a_config_saved_before_monitors_gets_them_from_its_eval_settings():
    from clframe.checkpoint.resume import upgrade

    old = {"seed": 3, "trainer": {"devices": 1}, "eval": {"every": None, "subset": 500, "plasticity": True,
                                                          "plasticity_every": 10, "batch_size": 100}}
    monitors = upgrade(old)["monitors"]
    assert monitors["continual"]["enabled"] is False and monitors["continual"]["subset"] == 500
    assert monitors["continual"]["seed"] == 3
    assert monitors["plasticity"] == {"enabled": True, "every": 10, "probe": 256}
    assert monitors["online"]["enabled"] is False
    assert upgrade(old)["eval"] == {"batch_size": 100}
