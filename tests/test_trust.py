"""A config read from a checkpoint or a run directory never runs code the user did not ask for: its
dotted paths are refused, with a one-line message, unless the user gives them on the command line
or sets resume_trust=true; registered components need no trust."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import run_main

from clframe.checkpoint.files import list_checkpoints
from clframe.config import compose
from clframe.config.trust import UntrustedConfigError, check_import, from_file, strings
from clframe.errors import ConfigError
from clframe.run.runner import run

BASE = ["scenario.n_experiences=2", "train.epochs=1", "logger.progress=false", "monitors.continual.enabled=false",
        "checkpoint.every=10", "checkpoint.keep=100"]
TINY = [*BASE, "backbone.hidden=[16]"]
NET = '''
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, input_shape, width: int = 8):
        super().__init__()
        n = 1
        for d in input_shape:
            n *= d
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n, width), nn.ReLU())
        self.out_features = width

    def forward(self, x):
        return self.net(x)
'''


def craft(run_dir: Path, node: str, value: dict) -> Path:
    """Rewrite the config stored in ``run_dir``'s newest checkpoint: ``node`` becomes ``value``."""
    path = list_checkpoints(run_dir)[-1][1]
    state = torch.load(path, weights_only=True)
    state["config"][node] = value
    state["finished"] = False
    torch.save(state, path)
    return path


def test_a_crafted_checkpoint_is_refused_with_one_line_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run(compose(TINY), tmp_path / "victim")
    marker = tmp_path / "PWNED"
    craft(tmp_path / "victim", "scenario", {"name": "os:system", "command": f"touch {marker}"})
    code, out, err = run_main(["run", f"resume={tmp_path / 'victim'}"], capsys)
    assert code == 2 and not marker.exists()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: Refusing to import 'os:system' (scenario.name), named by the config stored in "
                          "checkpoint ")
    assert "give it on the command line (scenario.name=os:system" in err and "resume_trust=true" in err


@pytest.fixture
def user_net(user_package) -> str:
    return f"{user_package({'nets.py': NET})}.nets:TinyNet"


def test_a_user_component_in_a_checkpoint_runs_when_the_user_names_it(user_net, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mine = ["backbone=custom", f"backbone.name={user_net}", "+backbone.width=8"]
    ref = run(compose([*BASE, *mine]), tmp_path / "ref")
    interrupted = tmp_path / "interrupted"
    shutil.copytree(tmp_path / "ref", interrupted)
    for step, p in list_checkpoints(interrupted):
        if step > 20:
            p.unlink()
    (interrupted / "summary.json").unlink()
    # the stored config names the user's backbone by dotted path: refused from the file alone
    code, _, err = run_main(["run", f"resume={interrupted}"], capsys)
    assert code == 2 and f"Refusing to import '{user_net}' (backbone.name)" in err
    assert not (interrupted / "summary.json").exists()
    # the same component given on the command line: the run goes on, and ends where the uninterrupted one did
    code, _, err = run_main(["run", f"resume={interrupted}", *mine], capsys)
    assert code == 0, err
    resumed = json.loads((interrupted / "summary.json").read_text())
    assert resumed["acc_matrix"] == ref["acc_matrix"] and resumed["resumed_from"].endswith("step-00000020.ckpt")


def test_resume_trust_lets_the_stored_config_import(user_net, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run(compose([*BASE, "backbone=custom", f"backbone.name={user_net}", "+backbone.width=8"]), tmp_path / "r")
    (tmp_path / "r" / "summary.json").unlink()
    code, out, err = run_main(["run", f"resume={tmp_path / 'r'}", "resume_trust=true"], capsys)
    assert code == 0, err
    assert (tmp_path / "r" / "summary.json").exists()


def test_the_policy_allows_registered_names_shipped_paths_and_the_users_own():
    stored = {"scenario": {"name": "os:system"}, "backbone": {"name": "mlp"}}
    check_import("os:system")  # outside a config from a file, the user's config may import anything
    with from_file("checkpoint x.ckpt", stored, trusted=["backbone.name=my.own:Net"]):
        check_import("avalanche.benchmarks.classic:SplitMNIST")  # a default of a built-in (the avalanche scenario)
        check_import("backbone.name=my.own:Net")  # what the user wrote
        with pytest.raises(UntrustedConfigError, match=r"^Refusing to import 'os:system' \(scenario\.name\)"):
            check_import("os:system")
    check_import("os:system")  # the policy ends with the block
    assert issubclass(UntrustedConfigError, ConfigError)
    assert strings({"a": ["x", {"b": "y"}], "c": 3}) == {"x", "y"}


def test_validate_reports_the_refusal_alone(tmp_path):
    from clframe.config import validate

    stored = validate(compose(TINY))
    stored["scenario"] = {"name": "os:system", "command": "true"}
    stored["train"]["lr"] = -1.0  # another problem, which the refusal comes before
    with from_file("checkpoint x.ckpt", stored), pytest.raises(UntrustedConfigError) as e:
        validate(stored)
    assert "\n" not in str(e.value) and "train.lr" not in str(e.value)


def test_ablate_refuses_a_run_directory_that_names_a_dotted_path(tmp_path):
    from clframe.evaluation.ablation import ablate_run

    run(compose(TINY), tmp_path / "r")
    marker = tmp_path / "PWNED"
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    cfg["scenario"] = {"name": "os:system", "command": f"touch {marker}"}
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(UntrustedConfigError, match="rerun with --trust"):
        ablate_run(tmp_path / "r", [0.0])
    assert not marker.exists()
