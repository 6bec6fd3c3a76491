"""File-system faults name the file and the cause in one line: a read-only run directory is refused
before anything runs, and a disk that fills up mid-run stops it with the earlier checkpoints whole,
from which it resumes to the uninterrupted result once there is space. Needs tmpfs mounts (root);
skipped elsewhere. Slow (real processes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from process_helpers import BASE, assert_same_as_uninterrupted, clframe

from clframe.checkpoint.files import latest_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture
def mount(tmp_path):
    mounted: list[Path] = []

    def make(name: str, options: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", str(path)], capture_output=True)


def test_a_read_only_run_directory_is_refused_before_anything_runs(tmp_path, mount):
    ro = mount("ro", "ro,size=1m")
    done = clframe(["run", *BASE, f"hydra.run.dir={ro / 'run'}"], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert f"Cannot create the run directory {ro / 'run'}: Read-only file system" in done.stderr


def test_a_full_disk_stops_the_run_with_whole_checkpoints_and_it_resumes(tmp_path, mount):
    disk = mount("disk", "size=1200k")
    overrides = [*BASE, "strategies.replay.mem_size=2000", "checkpoint.every=20", "checkpoint.keep=3"]
    run_dir = disk / "run"
    done = clframe(["run", *overrides, f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.startswith(f"error: Cannot write {run_dir / 'checkpoints'}/step-")
    assert f"continue with: clframe run resume={run_dir}" in done.stderr
    _, state = latest_checkpoint(run_dir)  # the checkpoints written before are whole
    assert 0 < state["step"] and not list((run_dir / "checkpoints").glob(".*.tmp"))
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space is freed
    resumed = clframe(["run", f"resume={run_dir}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_as_uninterrupted(run_dir, overrides, tmp_path)
