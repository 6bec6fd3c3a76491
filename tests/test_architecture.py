"""The architecture holds: no import cycles, no private names imported across modules, a short runner,
no capability probing in CLModule, every package installed, and one source for defaults (the
components' config nodes are their signatures)."""

from __future__ import annotations

import importlib.util
import inspect
import re
import tomllib
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from clframe.config import compose, validate
from clframe.config.defaults import GROUP_REGISTRIES, SCENARIO_COMMON, signature_node, yaml_options
from clframe.config.registry import MONITORS

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_import_graph_has_no_cycle():
    imports = _tool("imports")
    graph = imports.graph()
    assert len(graph) > 100 and "clframe.core.module" in graph["clframe.run.build"]  # the graph is real
    assert imports.cycles(graph) == []


def test_no_module_of_clframe_imports_a_private_name_from_another():
    assert _tool("imports").private_imports() == []


def test_the_runner_is_a_short_driver():
    assert len((ROOT / "clframe" / "run" / "runner.py").read_text().splitlines()) <= 200


def test_clmodule_finds_capabilities_by_protocol_not_by_attribute_name():
    source = (ROOT / "clframe" / "core" / "module.py").read_text()
    assert not re.search(r"\bhasattr\(|getattr\(\s*self\.(head|hypernet|model)", source)
    assert "isinstance(m, MasksTaskClasses)" in source  # a capability is a typing.Protocol


def test_every_package_directory_is_in_the_wheel():
    packages = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "clframe").rglob("__init__.py")}
    assert found | {"clframe.strategies", "clframe.scenarios", "clframe.configs"} == packages


def _components() -> list[tuple[str, str]]:
    return [(g, n) for g, reg in GROUP_REGISTRIES.items() for n in reg.names()
            if reg.get(n).__module__.startswith("clframe")]


@pytest.mark.parametrize(("group", "name"), _components(), ids=[f"{g}={n}" for g, n in _components()])
def test_a_components_config_node_is_its_signature(group, name):
    registry = GROUP_REGISTRIES[group]
    section = registry.key.format(name=name)
    node = OmegaConf.to_container(OmegaConf.select(compose([f"{group}={name}"]), section), resolve=False)
    common = SCENARIO_COMMON if group == "scenario" else {}  # every scenario's (scenario.boundaries)
    assert node == {"name": name, **common, **signature_node(registry.get(name), registry.provided)}
    params = inspect.signature(registry.get(name)).parameters
    for key, value in node.items():
        if key in common:
            assert value == common[key]
        elif key == "seed":
            assert value == "${seed}"  # a component's seed follows the run's
        elif key != "name" and params[key].default is not inspect.Parameter.empty:
            default = params[key].default
            assert value == (list(default) if isinstance(default, tuple) else default), key


def test_the_monitors_node_is_every_monitors_signature():
    monitors = validate(compose([]))["monitors"]
    assert list(monitors) == MONITORS.names()
    for name, node in monitors.items():
        cls = MONITORS.get(name)
        assert node["enabled"] is cls.enabled_by_default
        assert {k: v for k, v in node.items() if k != "enabled"} == {
            k: 0 if v == "${seed}" else v for k, v in signature_node(cls).items()}  # the seed resolved (0)


def test_defaults_are_overridden_without_a_plus():
    c = validate(compose(["strategy=ewc", "strategies.ewc.ewc_lambda=1000", "head=kalman", "head.gamma=0.9",
                          "monitors.plasticity.enabled=true", "monitors.plasticity.probe=64"]))
    assert c["strategies"]["ewc"]["ewc_lambda"] == 1000 and c["head"]["gamma"] == 0.9
    assert c["monitors"]["plasticity"] == {"enabled": True, "every": 1, "probe": 64}


@pytest.mark.parametrize("group", sorted(GROUP_REGISTRIES))
def test_a_yaml_option_of_a_component_chooses_something(group):
    # a YAML file named after a registered component replaces its generated node: it must choose something
    registry = GROUP_REGISTRIES[group]
    for name in set(yaml_options(group)) & set(registry.names()):
        import yaml

        chosen = yaml.safe_load((ROOT / "configs" / group / f"{name}.yaml").read_text()) or {}
        generated = {"name": name, **signature_node(registry.get(name), registry.provided)}
        assert any(generated.get(k) != v for k, v in chosen.items()), f"configs/{group}/{name}.yaml only copies"


def test_no_source_file_is_ignored_by_git():
    # an ignore pattern that matches a package (data/ once matched clframe/data/) keeps new files out of every clone
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    folders = ("clframe", "strategies", "scenarios", "configs", "tests", "tools")
    sources = [str(p.relative_to(ROOT)) for folder in folders for p in (ROOT / folder).rglob("*")
               if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *sources], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == []
