"""clframe installs as a library: a wheel (not an editable install) carries the configs, puts no generic
top-level ``strategies`` or ``scenarios`` package into site-packages, and runs the quickstart from any
working directory (about 15 s: it builds the wheel and makes a fresh virtualenv)."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_wheel_in_a_fresh_virtualenv_runs_the_quickstart_elsewhere(tmp_path):
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(dist), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("clframe-*.whl")
    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    sp = Path(subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies (torch, lightning, ...) are this environment's; clframe itself only from the wheel
    (sp / "deps.pth").write_text(site.getsitepackages()[0] + "\n")
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert not (sp / "strategies").exists() and not (sp / "scenarios").exists()
    assert (sp / "clframe" / "configs" / "config.yaml").is_file() and (sp / "clframe" / "strategies").is_dir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLFRAME_CONFIG_DIR")}
    done = subprocess.run([str(env_dir / "bin" / "clframe"), "run", "-m", "experiment=quickstart",
                           "strategy=naive,replay", "train.epochs=1", "logger.progress=false"],
                          cwd=elsewhere, env={**env, "WANDB_MODE": "offline"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = sorted(elsewhere.glob("multirun/quickstart/*/*/summary.json"))
    assert [json.loads(p.read_text())["strategies"] for p in summaries] == [["naive"], ["replay"]]
    where = subprocess.run([str(python), "-c", "import clframe, clframe.config as c; print(clframe.__file__); "
                            "print(c.CONFIG_DIR)"], cwd=elsewhere, env=env, capture_output=True, text=True)
    module_file, config_dir = where.stdout.split()
    assert module_file.startswith(str(sp)) and config_dir == str(sp / "clframe" / "configs")
