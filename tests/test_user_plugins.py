"""A user's own components work without editing clframe: by dotted path in the config, or
through an entry point of an installed package. The user's package lives in ``tmp_path``."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest
import yaml

from clframe.config import compose
from clframe.config.registry import BACKBONES, STRATEGIES, Registry
from clframe.errors import ConfigError
from clframe.run.runner import build, run

NETS = '''
from torch import nn

CREATED = []
FORWARDS = [0]


class TinyNet(nn.Module):
    """One hidden layer over flattened inputs."""

    def __init__(self, input_shape, width: int = 16):
        super().__init__()
        n = 1
        for d in input_shape:
            n *= d
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n, width), nn.ReLU())
        self.out_features = width
        CREATED.append({"input_shape": tuple(input_shape), "width": width})

    def forward(self, x):
        FORWARDS[0] += 1
        return self.net(x)
'''

STRATS = '''
from clframe.core.strategy import Strategy

CALLS = []


class Mine(Strategy):
    """Records every hook it sees."""

    def __init__(self, tag: str = "none", weight: float = 0.0):
        self.tag, self.weight = tag, weight
        CALLS.append(("init", tag))

    def setup(self, module):
        CALLS.append(("setup", None))

    def on_experience_start(self, exp, module):
        CALLS.append(("start", exp.index))

    def before_forward(self, batch, module):
        CALLS.append(("before_forward", batch.exp))
        return batch

    def loss_terms(self, ctx):
        return {"mine": ctx.loss * self.weight}

    def on_experience_end(self, exp, module):
        CALLS.append(("end", exp.index))
'''

ENTRY_POINTS = '''
[clframe.backbones]
tiny = my_pkg.nets:TinyNet
broken = my_pkg.nets:DoesNotExist

[clframe.strategies]
mine = my_pkg.strats:Mine
'''

RUN = ["scenario.n_experiences=2", "train.epochs=1", "logger.progress=false"]


def _forget_my_pkg() -> None:
    for name in [m for m in sys.modules if m == "my_pkg" or m.startswith("my_pkg.")]:
        del sys.modules[name]


@pytest.fixture
def my_pkg(tmp_path, monkeypatch):
    """``my_pkg`` (nets.py, strats.py) importable from ``tmp_path``, as a user's package would be."""
    pkg = tmp_path / "my_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(NETS)
    (pkg / "strats.py").write_text(STRATS)
    _forget_my_pkg()
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    _forget_my_pkg()


@pytest.fixture
def installed(my_pkg):
    """``my_pkg`` plus the metadata of an installed distribution that declares entry points."""
    dist = my_pkg / "my_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    importlib.invalidate_caches()
    return my_pkg


# -- dotted paths ------------------------------------------------------------------------------

def test_dotted_path_backbone_trains_end_to_end(my_pkg):
    cfg = compose([*RUN, "backbone=custom", "backbone.name=my_pkg.nets:TinyNet", "+backbone.width=8"])
    run_dir = my_pkg / "run"
    summary = run(cfg, run_dir)

    nets = importlib.import_module("my_pkg.nets")
    assert nets.CREATED == [{"input_shape": (1, 8, 8), "width": 8}]
    assert nets.FORWARDS[0] >= summary["steps"] > 0
    assert (run_dir / "summary.json").exists() and (run_dir / "metrics.csv").exists()
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == summary["steps"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["backbone"] == {"name": "my_pkg.nets:TinyNet", "width": 8}
    assert len(summary["acc_matrix"]) == 2


def test_dotted_path_backbone_params_are_checked_against_its_signature(my_pkg):
    cfg = compose(["backbone=custom", "backbone.name=my_pkg.nets:TinyNet", "+backbone.widht=8"])
    with pytest.raises(ConfigError) as e:
        build(cfg)
    assert "Unknown key 'backbone.widht' for backbone 'my_pkg.nets:TinyNet'" in str(e.value)
    assert "Did you mean 'width'?" in str(e.value)
    with pytest.raises(ConfigError, match="'backbone.width' must be int, got 'big'"):
        build(compose(["backbone=custom", "backbone.name=my_pkg.nets:TinyNet", "+backbone.width=big"]))


def test_the_mlp_node_can_also_be_replaced_key_by_key(my_pkg):
    # without the `custom` option: delete mlp's keys, set the name, add the user's key
    cfg = compose(["backbone.name=my_pkg.nets:TinyNet", "~backbone.hidden", "~backbone.activation",
                   "~backbone.dropout", "~backbone.init", "+backbone.width=5"])
    built = build(cfg)
    assert type(built.module.backbone).__name__ == "TinyNet"
    assert built.module.backbone.out_features == 5


def test_custom_backbone_without_a_name_says_what_to_set():
    with pytest.raises(ConfigError, match=r"'backbone.name' is missing"):
        build(compose(["backbone=custom"]))


def test_a_misspelt_dotted_path_names_the_attribute(my_pkg):
    with pytest.raises(ConfigError) as e:
        build(compose(["backbone=custom", "backbone.name=my_pkg.nets:TinyNte"]))
    assert "module 'my_pkg.nets' has no attribute 'TinyNte'" in str(e.value)
    assert "Did you mean 'TinyNet'?" in str(e.value)


def test_dotted_path_strategy_is_called(my_pkg):
    cfg = compose([*RUN, "backbone.hidden=[16]", "+strategies.mine={name: my_pkg.strats:Mine, tag: hello}",
                   "+strategies.mine.weight=0.5"])
    summary = run(cfg, my_pkg / "run")

    calls = importlib.import_module("my_pkg.strats").CALLS
    assert summary["strategies"] == ["naive", "mine"]
    assert calls[0] == ("init", "hello")
    assert calls[1] == ("setup", None)
    assert [c for c in calls if c[0] in ("start", "end")] == [("start", 0), ("end", 0), ("start", 1), ("end", 1)]
    forwards = [c for c in calls if c[0] == "before_forward"]
    assert len(forwards) == summary["steps"]
    assert {c[1] for c in forwards} == {0, 1}
    assert "loss/mine" in summary["final_losses"]
    assert summary["final_losses"]["loss/mine"] == pytest.approx(0.5 * summary["final_losses"]["loss/task"])


# -- entry points ------------------------------------------------------------------------------

def test_backbone_entry_point_of_an_installed_package(installed):
    reg = Registry("backbone", "clframe.models.backbones", provided=("input_shape",))
    assert "tiny" in reg.names()
    tiny = reg.get("tiny")
    assert tiny is importlib.import_module("my_pkg.nets").TinyNet
    assert list(reg.params("tiny")) == ["width"]
    assert reg.build("tiny", {"width": 3}, input_shape=(4,)).out_features == 3


def test_broken_entry_point_names_itself(installed):
    reg = Registry("backbone", "clframe.models.backbones", provided=("input_shape",))
    with pytest.raises(ConfigError) as e:
        reg.get("broken")
    assert "Entry point 'broken' (my_pkg.nets:DoesNotExist) for backbones failed to load" in str(e.value)


def test_entry_point_backbone_is_usable_from_the_config(installed, monkeypatch):
    # the global registry caches what it loaded; make it look again, and restore it afterwards
    monkeypatch.setattr(BACKBONES, "_items", dict(BACKBONES._items))
    monkeypatch.setattr(BACKBONES, "_loaded", False)
    built = build(compose(["backbone=custom", "backbone.name=tiny", "+backbone.width=6"]))
    assert type(built.module.backbone) is importlib.import_module("my_pkg.nets").TinyNet
    assert built.module.backbone.out_features == 6


def test_strategy_entry_point_of_an_installed_package(installed):
    assert STRATEGIES.group == "clframe.strategies"
    reg = Registry(STRATEGIES.kind, STRATEGIES.package, STRATEGIES.provided, plural=STRATEGIES.plural)
    assert "mine" in reg.names()
    assert reg.get("mine") is importlib.import_module("my_pkg.strats").Mine
    assert list(reg.params("mine")) == ["tag", "weight"]


def test_entry_point_strategy_is_usable_from_the_config(installed, monkeypatch):
    monkeypatch.setattr(STRATEGIES, "_items", dict(STRATEGIES._items))
    monkeypatch.setattr(STRATEGIES, "_loaded", False)
    # a strategy key without a name is looked up under the key itself
    built = build(compose(["+strategies.mine={tag: from_entry_point}"]))
    mine = built.module.strategies["mine"]
    assert type(mine) is importlib.import_module("my_pkg.strats").Mine
    assert mine.tag == "from_entry_point"
    assert list(built.module.strategies) == ["naive", "mine"]
