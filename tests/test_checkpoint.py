"""Checkpoint files (clframe/checkpoint.py): atomic writes, safe loading, fallback, pruning, RNG state."""

from __future__ import annotations

import argparse
import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from clframe.checkpoint.checkpointer import Checkpointer
from clframe.checkpoint.files import (
    FORMAT,
    KEYS,
    atomic_save,
    check_plain,
    checkpoint_dir,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune,
    rng_state,
    set_rng_state,
)
from clframe.config import compose
from clframe.core.strategy import Strategy
from clframe.errors import CheckpointError, StorageError
from clframe.run.runner import build


def fake_state(step: int = 1, **changes) -> dict:
    """A minimal checkpoint that ``load_checkpoint`` accepts."""
    state = {k: None for k in KEYS}
    state.update(format=FORMAT, clframe="test", step=step, experience=0, finished=False, config={},
                 module={"model": {"w": torch.full((3,), float(step))}})
    state.update(changes)
    return state


def write(run_dir: Path, step: int, rank: int = 0, world_size: int = 1) -> Path:
    path = checkpoint_dir(run_dir) / checkpoint_name(step, rank, world_size)
    atomic_save({**fake_state(step), "world_size": world_size, "rank": rank}, path)
    return path


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- names ---------------------------------------------------------------------------------------

def test_checkpoint_names_sort_by_step_and_carry_the_rank_only_when_distributed():
    assert checkpoint_name(7) == "step-00000007.ckpt"
    assert checkpoint_name(7, rank=0, world_size=1) == "step-00000007.ckpt"
    assert checkpoint_name(123, rank=1, world_size=2) == "step-00000123-rank1.ckpt"


def test_list_checkpoints_by_rank(tmp_path):
    for step in (3, 12, 7):
        write(tmp_path, step)
    write(tmp_path, 5, rank=1, world_size=2)
    (checkpoint_dir(tmp_path) / "notes.txt").write_text("not a checkpoint")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 7, 12]  # numeric order
    assert [s for s, _ in list_checkpoints(tmp_path, rank=1)] == [5]
    assert list_checkpoints(tmp_path, rank=0) == []


# -- atomic_save ---------------------------------------------------------------------------------

def test_atomic_save_writes_a_loadable_file_and_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "step-00000001.ckpt"
    atomic_save(fake_state(1), path)
    assert files(path.parent) == ["step-00000001.ckpt"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert torch.equal(load_checkpoint(path)["module"]["model"]["w"], torch.ones(3))
    atomic_save(fake_state(2), path)  # replaces
    assert load_checkpoint(path)["step"] == 2
    assert files(path.parent) == ["step-00000001.ckpt"]


def test_atomic_save_failing_midway_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "step-00000001.ckpt"
    atomic_save(fake_state(1), path)
    before = path.read_bytes()
    real_save = torch.save

    def half_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial checkpoint bytes" * 100)  # some bytes reach the temporary file
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(StorageError, match=f"^Cannot write {re.escape(str(path))}: No space left on device"):
        atomic_save(fake_state(2), path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert files(tmp_path) == ["step-00000001.ckpt"]


def test_atomic_save_interrupted_keeps_the_old_file(tmp_path, monkeypatch):
    # a KeyboardInterrupt (second Ctrl-C) midway is cleaned up the same way
    path = tmp_path / "step-00000001.ckpt"
    atomic_save(fake_state(1), path)

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"x" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_save(fake_state(2), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert files(tmp_path) == ["step-00000001.ckpt"]


# -- load_checkpoint -----------------------------------------------------------------------------

def test_load_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "step-00000001.ckpt")


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
def test_load_truncated_file(tmp_path, fraction):
    path = tmp_path / "step-00000001.ckpt"
    atomic_save(fake_state(1, module={"model": {"w": torch.randn(1000)}}), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("content", [
    bytes(random.Random(0).getrandbits(8) for _ in range(4096)),  # random bytes
    b"this is not a checkpoint\n" * 20,  # text (raised KeyError inside torch.load)
    b"\x80\x02]q\x00(K\x01K\x02e.",  # a pickle that is not a torch file
], ids=["random", "text", "pickle"])
def test_load_garbage_file(tmp_path, content):
    path = tmp_path / "step-00000001.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_load_file_truncated_anywhere_raises_checkpoint_error(tmp_path, legacy):
    # the pre-zip torch format fails in other ways inside torch.load (IndexError, struct.error, ...)
    path = tmp_path / "step-00000001.ckpt"
    torch.save(fake_state(1), path, _use_new_zipfile_serialization=not legacy)
    assert load_checkpoint(path)["step"] == 1
    data = path.read_bytes()
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        # a cut inside a class name reads as an unknown global: refused rather than called corrupt
        assert "corrupt or truncated" in str(e.value) or "Refusing to load" in str(e.value), (cut, str(e.value))


class Opaque:
    """Not a tensor or plain container: only full unpickling can rebuild it."""

    def __init__(self) -> None:
        self.value = 3


@pytest.mark.parametrize("obj", [argparse.Namespace(lr=0.1), Opaque()], ids=["namespace", "custom_class"])
def test_load_refuses_a_file_that_needs_full_unpickling(tmp_path, obj):
    path = tmp_path / "step-00000001.ckpt"
    state = fake_state(1)
    state["module"]["extra"] = obj
    try:
        torch.save(state, path)
    except (AttributeError, TypeError, pickle.PicklingError) as e:  # pragma: no cover - import-mode dependent
        pytest.skip(f"cannot pickle {type(obj).__name__} here: {e}")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "Refusing to load" in msg and "weights_only" in msg
    assert type(obj).__name__ in msg  # names the offending global
    assert "corrupt" not in msg


def test_load_wrong_format_names_both_formats(tmp_path):
    path = tmp_path / "step-00000001.ckpt"
    torch.save(fake_state(1, format=FORMAT + 98, clframe="9.9.9"), path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert f"format {FORMAT + 98}" in msg and "9.9.9" in msg and f"reads format {FORMAT}" in msg


def test_load_not_a_clframe_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a clframe checkpoint"):
        load_checkpoint(path)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="not a clframe checkpoint"):
        load_checkpoint(path)


def test_load_incomplete_checkpoint_names_the_missing_keys(tmp_path):
    path = tmp_path / "step-00000001.ckpt"
    state = fake_state(1)
    del state["rng"], state["recorder"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="incomplete: it lacks rng, recorder"):
        load_checkpoint(path)


# -- latest_checkpoint ---------------------------------------------------------------------------

def test_latest_checkpoint_takes_the_newest(tmp_path):
    for step in (7, 14, 9):
        write(tmp_path, step)
    path, state = latest_checkpoint(tmp_path)
    assert path.name == "step-00000014.ckpt" and state["step"] == 14


def test_latest_checkpoint_of_a_file_is_that_file(tmp_path):
    older = write(tmp_path, 7)
    write(tmp_path, 14)
    path, state = latest_checkpoint(older)
    assert path == older and state["step"] == 7


def test_latest_checkpoint_falls_back_when_the_newest_is_corrupt(tmp_path):
    write(tmp_path, 7)
    write(tmp_path, 14)
    newest = write(tmp_path, 21)
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="Skipped unreadable newer checkpoints") as w:
        path, state = latest_checkpoint(tmp_path)
    assert path.name == "step-00000014.ckpt" and state["step"] == 14
    assert "step-00000021.ckpt" in str(w[0].message) and "corrupt or truncated" in str(w[0].message)


def test_latest_checkpoint_when_none_loads(tmp_path):
    for step in (7, 14):
        write(tmp_path, step).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="No loadable checkpoint") as e:
        latest_checkpoint(tmp_path)
    assert "step-00000007.ckpt" in str(e.value) and "step-00000014.ckpt" in str(e.value)


def test_latest_checkpoint_of_an_empty_or_missing_run(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints in"):
        latest_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such run directory or checkpoint file"):
        latest_checkpoint(tmp_path / "nope")


def test_latest_checkpoint_per_rank(tmp_path):
    write(tmp_path, 10, rank=0, world_size=2)
    write(tmp_path, 10, rank=1, world_size=2)
    write(tmp_path, 20, rank=0, world_size=2)  # rank 1 did not get to write its step-20 file
    with pytest.warns(UserWarning, match="lacks the files"):  # every rank resumes from the same step
        assert latest_checkpoint(tmp_path, rank=0, world_size=2)[0].name == "step-00000010-rank0.ckpt"
    assert latest_checkpoint(tmp_path, rank=1, world_size=2)[0].name == "step-00000010-rank1.ckpt"
    with pytest.warns(UserWarning, match=r"Step 20 lacks the files of rank\(s\) \[1\]"):
        # one process reading a multi-process run (to learn its config) takes rank 0's newest complete step
        assert latest_checkpoint(tmp_path)[0].name == "step-00000010-rank0.ckpt"


# -- prune ---------------------------------------------------------------------------------------

def tmp_file(run_dir: Path, step: int, rank: int = 0, world_size: int = 1) -> Path:
    """A leftover temporary file as ``atomic_save`` names them."""
    p = checkpoint_dir(run_dir) / f".{checkpoint_name(step, rank, world_size)}.abc123.tmp"
    p.write_bytes(b"partial")
    return p


def test_prune_keeps_the_newest(tmp_path):
    for step in range(1, 6):
        write(tmp_path, step)
    prune(tmp_path, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    prune(tmp_path, keep=5)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    prune(tmp_path, keep=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5]


def test_prune_removes_stale_temporary_files_of_its_rank_only(tmp_path):
    for step in (10, 20, 30):
        write(tmp_path, step)
    stale = [tmp_file(tmp_path, 25), tmp_file(tmp_path, 30)]
    in_progress = tmp_file(tmp_path, 40)  # newer than any complete file: may be being written
    other_rank = [write(tmp_path, 5, rank=1, world_size=2), write(tmp_path, 15, rank=1, world_size=2)]
    other_tmp = tmp_file(tmp_path, 12, rank=1, world_size=2)
    prune(tmp_path, keep=2)
    left = files(checkpoint_dir(tmp_path))
    assert not any(p.name in left for p in stale)
    assert in_progress.name in left and other_tmp.name in left
    assert all(p.name in left for p in other_rank)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 30]

    # rank 1 prunes its own files and temporary files, and leaves the single-process ones alone
    prune(tmp_path, keep=1, rank=1)
    left = files(checkpoint_dir(tmp_path))
    assert other_tmp.name not in left and in_progress.name in left
    assert [s for s, _ in list_checkpoints(tmp_path, rank=1)] == [15]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 30]


def test_prune_without_complete_files_keeps_temporary_files(tmp_path):
    checkpoint_dir(tmp_path).mkdir(parents=True)
    t = tmp_file(tmp_path, 3)
    prune(tmp_path, keep=2)
    assert t.exists()


# -- RNG state -----------------------------------------------------------------------------------

def draws() -> list:
    return [torch.rand(5).tolist(), torch.randn(3).tolist(), np.random.rand(4).tolist(),
            np.random.standard_normal(3).tolist(), random.random(), random.gauss(0, 1), random.randrange(10**9)]


@pytest.mark.parametrize("through_file", [False, True])
def test_rng_state_round_trip(tmp_path, through_file):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    # leave cached Gaussians behind in numpy's legacy state and Python's random
    np.random.standard_normal()
    random.gauss(0, 1)
    state = rng_state()
    if through_file:
        path = tmp_path / "step-00000001.ckpt"
        atomic_save(fake_state(1, rng=state), path)
        state = load_checkpoint(path)["rng"]
    expected = draws()
    draws()  # move every generator on
    set_rng_state(state)
    assert draws() == expected


def test_rng_state_is_plain():
    check_plain(rng_state(), "rng")


# -- check_plain ---------------------------------------------------------------------------------

def test_check_plain_accepts_tensors_and_plain_containers():
    check_plain({"a": [1, 2.5, "x", None, True, (torch.zeros(2), torch.float32, torch.Size([2]))],
                 3: {"nested": {"t": torch.ones(1)}}}, "state")


@pytest.mark.parametrize("obj, path, kind", [
    ({"a": [1, {"b": object()}]}, "state['a'][1]['b']", "builtins.object"),
    ([np.zeros(2)], "state[0]", "numpy.ndarray"),
    ({"gen": torch.Generator()}, "state['gen']", "Generator"),
    ((1, {"f": lambda: 0}), "state[1]['f']", "function"),
    ({"s": {1, 2}}, "state['s']", "builtins.set"),
])
def test_check_plain_names_the_path_of_a_bad_value(obj, path, kind):
    with pytest.raises(TypeError) as e:
        check_plain(obj, "state")
    assert str(e.value).startswith(f"{path} is a ") and kind in str(e.value)


def test_check_plain_rejects_keys_that_are_not_str_or_int():
    with pytest.raises(TypeError, match=r"state\['a'\] has a key of type tuple"):
        check_plain({"a": {(1, 2): 3}}, "state")


# -- Checkpointer.state --------------------------------------------------------------------------

class HoldsAGenerator(Strategy):
    def __init__(self) -> None:
        self.gen = torch.Generator().manual_seed(0)

    def state_dict(self):
        return {"seen": 3, "rngs": [self.gen]}  # should be self.gen.get_state()


def test_checkpointer_rejects_strategy_state_that_is_not_plain(tiny, tmp_path):
    built = build(compose(tiny))
    built.module.strategies = {"naive": Strategy(), "mine": HoldsAGenerator()}
    ck = Checkpointer(tmp_path, built.config)
    with pytest.raises(TypeError) as e:
        ck.state(built.module)
    msg = str(e.value)
    assert "strategy 'mine' state_dict()['rngs'][0] is a torch" in msg and "Generator" in msg
    assert "weights_only=True" in msg
    assert not checkpoint_dir(tmp_path).exists()


def test_checkpointer_state_loads_back(tiny, tmp_path):
    built = build(compose(tiny))
    ck = Checkpointer(tmp_path, built.config)
    path = ck.save(built.module)
    assert path == checkpoint_dir(tmp_path) / "step-00000000.ckpt" and ck.last_path == path
    state = load_checkpoint(path)
    assert state["step"] == 0 and state["finished"] is False and state["config"] == built.config
    model = built.module.state_dict()
    assert state["module"]["model"].keys() == model.keys()
    assert all(torch.equal(state["module"]["model"][k], v) for k, v in model.items())
    assert ck.save(built.module) == path and len(ck.save_times) == 1  # same state: not written twice
    assert os.listdir(checkpoint_dir(tmp_path)) == ["step-00000000.ckpt"]


def test_a_checkpoint_of_format_1_reads_with_its_monitors_by_name(tmp_path):
    # clframe 0.2 kept the continual evaluator's state under "evaluator" and the other monitors' under "extra"
    old = {**fake_state(3), "format": 1, "evaluator": {"steps": [0, 1]}, "extra": {"plasticity": {"rows": []}}}
    old.pop("monitors")
    path = tmp_path / "step-00000003.ckpt"
    atomic_save(old, path)
    state = load_checkpoint(path)
    assert state["format"] == 2 and "evaluator" not in state and "extra" not in state
    assert state["monitors"] == {"plasticity": {"rows": []}, "continual": {"steps": [0, 1]}}
