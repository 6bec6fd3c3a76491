"""The review's crafted checkpoint: a stored config whose scenario is ``os:system`` must not run its shell
command on ``resume=``; the refusal is one line, and a user's own component in a checkpoint runs when the
user names it on the command line. Real ``clframe run`` subprocesses; slow (the fast version is
tests/test_trust.py)."""

from __future__ import annotations

import pytest
import torch
from process_helpers import clframe

from clframe.checkpoint.files import list_checkpoints

pytestmark = pytest.mark.slow

TINY = ["scenario.n_experiences=2", "train.epochs=1", "logger.progress=false", "monitors.continual.enabled=false",
        "checkpoint.every=10", "checkpoint.keep=100"]


def test_resume_of_a_crafted_checkpoint_runs_no_shell_command(tmp_path):
    assert clframe(["run", *TINY, "backbone.hidden=[16]", "hydra.run.dir=victim"], tmp_path).returncode == 0
    path = list_checkpoints(tmp_path / "victim")[-1][1]
    state = torch.load(path, weights_only=True)
    state["config"]["scenario"] = {"name": "os:system", "command": f"touch {tmp_path / 'PWNED'}"}
    state["finished"] = False
    torch.save(state, path)
    done = clframe(["run", "resume=victim"], tmp_path)
    assert done.returncode == 2 and not (tmp_path / "PWNED").exists()
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: Refusing to import 'os:system'")


def test_a_users_component_in_a_checkpoint_runs_when_named_on_the_command_line(tmp_path):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text(
        "from torch import nn\n\n\nclass Net(nn.Module):\n"
        "    def __init__(self, input_shape, width: int = 8):\n"
        "        super().__init__()\n        self.out_features = width\n"
        "        self.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.ReLU())\n\n"
        "    def forward(self, x):\n        return self.net(x)\n")
    env = {"PYTHONPATH": str(tmp_path)}
    mine = ["backbone=custom", "backbone.name=mypkg:Net", "+backbone.width=8"]
    assert clframe(["run", *TINY, *mine, "hydra.run.dir=r"], tmp_path, env).returncode == 0
    (tmp_path / "r" / "summary.json").unlink()
    refused = clframe(["run", "resume=r"], tmp_path, env)
    assert refused.returncode == 2 and "Refusing to import 'mypkg:Net' (backbone.name)" in refused.stderr
    done = clframe(["run", "resume=r", *mine], tmp_path, env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "r" / "summary.json").exists()
