"""Bad inputs that only the built objects reveal are ConfigErrors before any training step,
each naming the problem, the config key and the fix: an empty experience, a scenario asking
for classes the dataset lacks, a head with too few logits, a replay buffer of size 0."""

from __future__ import annotations

import sys
import uuid
from typing import Literal

import pytest
import torch
from clframe.scenarios.split import split
from torch import Tensor, nn

from clframe.config import compose
from clframe.config.registry import HEADS, SCENARIOS, Registry
from clframe.data.stream import Scenario
from clframe.errors import ConfigError
from clframe.models.heads.linear import LinearHead
from clframe.run.checks import check_head, check_scenario
from clframe.run.runner import build, fit

BASE = ["backbone.hidden=[32]", "logger.progress=false"]


def split_with(empty: Literal["none", "train", "eval"] = "none", n_classes: int = 10) -> Scenario:
    """Split digits in 2 experiences; optionally experience 1 without training or eval samples,
    or a declared ``n_classes`` other than the dataset's."""
    s = split(n_experiences=2)
    if empty != "none":
        data = getattr(s.stream[1], empty)
        setattr(s.stream[1], empty, data.subset(torch.zeros(len(data), dtype=torch.bool)))
    s.n_classes = n_classes
    return s


class FixedHead(nn.Module):
    """A user's head with a fixed number of outputs, whatever the stream's classes."""

    def __init__(self, in_features: int, n_classes: int, n_tasks: int = 1, out: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out)

    def forward(self, h: Tensor, t: Tensor) -> Tensor:
        return self.fc(h)


class SmallLinear(LinearHead):
    """The linear head with its ``n_classes`` forced smaller."""

    def __init__(self, in_features: int, n_classes: int, n_tasks: int = 1, n_out: int = 5) -> None:
        super().__init__(in_features, n_out, n_tasks)


@pytest.fixture
def register():
    """``register(registry, obj)`` registers ``obj`` under a fresh name (removed afterwards)."""
    added: list[tuple[Registry, str]] = []

    def add(registry: Registry, obj: object) -> str:
        name = f"test_{registry.kind}_{uuid.uuid4().hex[:8]}"
        registry.register(name)(obj)
        added.append((registry, name))
        return name

    yield add
    for registry, name in added:
        registry._items.pop(name)


def build_custom_scenario(register, **params: object):
    name = register(SCENARIOS, split_with)
    return build(compose(["scenario=custom", f"scenario.name={name}", *BASE,
                          *(f"+scenario.{k}={v}" for k, v in params.items())]))


# -- (a) an empty experience ------------------------------------------------------------------

@pytest.mark.parametrize(("empty", "what"), [("train", "training"), ("eval", "eval")])
def test_an_experience_without_samples(register, empty, what):
    with pytest.raises(ConfigError, match=rf"Experience 1 of scenario 'split-digits .*' has no {what} samples "
                                          r"\(classes \[5, 6, 7, 8, 9\]\)\. Every experience needs training and "
                                          r"eval samples: change the settings under 'scenario' so that each "
                                          r"experience gets some \(e\.g\. fewer experiences with "
                                          r"scenario\.n_experiences"):
        build_custom_scenario(register, empty=empty)  # build runs check_scenario


def test_a_stream_without_experiences_stops_the_build():
    with pytest.raises(ConfigError, match=r"scenario\.n_experiences must be >= 1, got 0: a stream needs at least "
                                          r"one experience\. Set scenario\.n_experiences"):
        build(compose(["scenario=permuted", "scenario.n_experiences=0", *BASE]))


# -- (b) a scenario asking for more classes than the dataset has -------------------------------

@pytest.mark.parametrize(("override", "match"), [
    ("scenario.n_experiences=11",
     r"scenario\.n_experiences must be in \[1, 10\] for digits, got 11: each experience needs at least one class "
     r"and digits has 10 classes\. Set scenario\.n_experiences to a value in that range\."),
    ("scenario.class_order=[0,1,2,3,4,5,6,7,8,10]",
     r"scenario\.class_order must be a permutation of \[0, .*, 9\], got \[0, .*, 10\]: class 10 is not in digits; "
     r"class 9 is missing\. List every class of digits exactly once, or set scenario\.class_order=null"),
])
def test_a_scenario_asking_for_classes_the_dataset_lacks(override, match):
    with pytest.raises(ConfigError, match=match):
        build(compose([override, *BASE]))


def test_labels_outside_the_scenarios_classes(register):
    with pytest.raises(ConfigError, match=r"Experience 1 of scenario .* has labels in \[5, 9\], outside "
                                          r"\[0, 8\): the scenario declares n_classes=8, which sizes the head\. "
                                          r"Fix the scenario under 'scenario': .* the largest label \+ 1 \(10\)"):
        build_custom_scenario(register, n_classes=8)


# -- (c) a head too small for the classes ------------------------------------------------------

@pytest.mark.parametrize("head", [FixedHead, SmallLinear])
def test_a_head_with_fewer_logits_than_classes(register, tiny, head):
    name = register(HEADS, head)
    check_scenario(build(compose(tiny)).scenario)  # the scenario itself is fine
    with pytest.raises(ConfigError, match=rf"head '{name}' under 'head' outputs 5 logits per sample, but the labels "
                                          r"of scenario 'split-digits .*' go up to 9 \(experience 1\), so it needs at "
                                          r"least 10 \(largest label \+ 1\)\. Fix 'head': size the head from the "
                                          r"n_classes the framework passes it \(n_classes=10\)"):
        build(compose([*tiny, "head=custom", f"head.name={name}"]))  # build runs check_head


def test_the_head_check_leaves_training_untouched(tiny):
    built = build(compose([*tiny, "backbone.dropout=0.5"]))
    module = built.module
    module.backbone.eval()  # a submodule in its own mode keeps it
    modes = {n: m.training for n, m in module.named_modules()}
    params = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    check_scenario(built.scenario)
    check_head(module, built.scenario)
    assert torch.equal(torch.get_rng_state(), rng)
    assert {n: m.training for n, m in module.named_modules()} == modes
    assert all(torch.equal(v, params[k]) for k, v in module.state_dict().items())
    assert all(p.grad is None for p in module.parameters())



def test_training_after_the_checks_is_training_without_them(tiny):
    overrides = [*tiny, "backbone.dropout=0.3", "strategy=replay"]  # dropout and replay draw random numbers
    trained = []
    for checked in (False, True):
        built = build(compose(overrides))
        if checked:
            check_scenario(built.scenario)
            check_head(built.module, built.scenario)
        fit(built)
        trained.append(built.module)
    plain, checked = trained
    assert checked.acc_matrix == plain.acc_matrix
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in checked.state_dict().items())

# -- (d) a replay buffer of size 0 ---------------------------------------------------------------

def test_a_replay_buffer_of_size_zero(tiny):
    with pytest.raises(ConfigError, match=r"^'strategies\.replay\.mem_size' must be >= 1, got 0: the replay buffer "
                                          r"needs room for at least one sample\. Set it to the number of samples to "
                                          r"keep \(default 200\), or drop the replay strategy"):
        build(compose([*tiny, "strategy=replay", "strategies.replay.mem_size=0"]))


def test_a_regression_head_must_output_the_target_size(register):
    name = register(HEADS, FixedHead)
    with pytest.raises(ConfigError, match=rf"head '{name}' under 'head' outputs 5 values per sample, but regression "
                                          r"scenario 'slowly-changing-regression.*' has 1-dimensional targets"):
        build(compose(["experiment=slowly_changing_regression", "scenario.n_tasks=1", "scenario.steps_per_task=10",
                       "head=custom", f"head.name={name}", "~head.init", "logger.progress=false"]))


# -- a user's component that does not keep the contract ----------------------------------------

def test_a_scenario_that_returns_something_else_is_named_with_the_contract(register):
    name = register(SCENARIOS, lambda: (torch.zeros(4, 2), torch.zeros(4)))
    with pytest.raises(ConfigError, match=rf"^scenario '{name}' under 'scenario' returned tuple, not a Scenario\. "
                                          r"A scenario builder returns clframe\.api\.Scenario\(stream=Stream"):
        build(compose(["scenario=custom", f"scenario.name={name}", *BASE]))

    def listed() -> Scenario:
        s = split(n_experiences=2)
        s.stream = list(s.stream)
        return s

    name = register(SCENARIOS, listed)
    with pytest.raises(ConfigError, match="whose stream is a list, not a Stream"):
        build(compose(["scenario=custom", f"scenario.name={name}", *BASE]))


class NoOutFeatures(nn.Module):
    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.net = nn.Flatten()


class NoInputShape(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.out_features = width


def test_a_backbone_without_out_features_or_input_shape_is_a_config_error(register):
    from clframe.config.registry import BACKBONES

    name = register(BACKBONES, NoOutFeatures)
    with pytest.raises(ConfigError, match=rf"^backbone '{name}' must set self\.out_features"):
        build(compose(["backbone=custom", f"backbone.name={name}", "logger.progress=false"]))
    name = register(BACKBONES, NoInputShape)
    with pytest.raises(ConfigError, match=rf"backbone '{name}' must accept the argument input_shape, which clframe "
                                          "passes to every backbone"):
        build(compose(["backbone=custom", f"backbone.name={name}", "logger.progress=false"]))


USER_SCENARIO = """
import torch


def tensors(n_experiences: int = 2):
    \"\"\"The newcomer's builder: tensors, not a Scenario.\"\"\"
    return torch.rand(20, 1, 8, 8), torch.arange(20) % 10
"""

USER_CNN = """
from torch import nn


class SmallCNN(nn.Module):
    \"\"\"A convolution, then flatten; forgets to set out_features.\"\"\"

    def __init__(self, input_shape, channels: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(input_shape[0], channels, 3, padding=1), nn.Flatten())

    def forward(self, x):
        return self.net(x)
"""


def test_the_newcomers_contract_errors_are_one_line_through_clframe_run(user_package, tmp_path, monkeypatch, capsys):
    from cli_helpers import run_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # clframe run hands sys.argv to Hydra
    pkg = user_package({"scen.py": USER_SCENARIO, "cnn.py": USER_CNN})
    code, _, err = run_main(["run", "scenario=custom", f"scenario.name={pkg}.scen:tensors", "logger.progress=false",
                             "hydra.run.dir=run"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: scenario '{pkg}.scen:tensors' under 'scenario' returned tuple, not a Scenario. "
                          "A scenario builder returns ")
    assert "Scenario(stream=Stream([Experience(index, train=TensorData(x, y, t), eval=TensorData(x, y, t)" in err
    code, _, err = run_main(["run", "backbone=custom", f"backbone.name={pkg}.cnn:SmallCNN", "logger.progress=false",
                             "hydra.run.dir=run2"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: backbone '{pkg}.cnn:SmallCNN' must set self.out_features (an int: the size of "
                          "the features it returns, which sizes the head)")


# -- non-finite inputs -------------------------------------------------------------------------

def nan_inputs(split_name: str = "eval") -> Scenario:
    s = split(n_experiences=2)
    getattr(s.stream[1], split_name).x[:3, 0, 0, 0] = float("nan")
    return s


def test_nan_in_training_inputs_is_an_error_naming_the_experience(register):
    name = register(SCENARIOS, nan_inputs)
    with pytest.raises(ConfigError, match=r"Experience 1 of scenario .* has 3 of \d+ training samples with NaN or "
                                          r"infinite inputs"):
        build(compose(["scenario=custom", f"scenario.name={name}", "+scenario.split_name=train", *BASE]))


def test_nan_in_eval_inputs_is_reported_once_with_the_experience(register, capsys):
    name = register(SCENARIOS, nan_inputs)
    built = build(compose(["scenario=custom", f"scenario.name={name}", *BASE]))
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "warning: Experience 1 of scenario" in err and "3 of" in err and "eval samples with NaN" in err
    fit(built)  # training goes on; the evaluation of that experience is what the warning said
    assert capsys.readouterr().err.count("warning:") == 0
