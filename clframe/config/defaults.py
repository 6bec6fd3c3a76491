"""One source for defaults: the config nodes of the components come from their constructor signatures.

Every registered scenario, backbone, head, hypernetwork and strategy (built-in or an installed
entry point) is a group option of its config group without a YAML file: its node is generated from
the signature with hydra-zen's ``kwargs_of`` and stored in Hydra's ConfigStore (``register``), so
``strategy=ewc`` gives ``strategies.ewc`` with all of EWC's defaults and
``strategies.ewc.ewc_lambda=1000`` needs no ``+``. A parameter named ``seed`` follows the run's
seed (``${seed}``). The ``monitors`` node holds every registered monitor the same way, with
``enabled`` from the monitor's ``enabled_by_default``. YAML files under ``configs/`` hold only what
an experiment chooses, and a YAML file of a group option replaces the generated node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clframe.config.paths import CONFIG_DIR
from clframe.config.registry import BACKBONES, HEADS, HYPERNETS, MONITORS, SCENARIOS, STRATEGIES, Registry
from clframe.errors import ConfigError

# config group -> the registry of its options
GROUP_REGISTRIES: dict[str, Registry] = {"scenario": SCENARIOS, "backbone": BACKBONES, "head": HEADS,
                                         "hypernet": HYPERNETS, "strategy": STRATEGIES}
_registered: set[tuple[str, str]] = set()
_monitors_stored: list[tuple[str, ...]] = [()]  # the monitor names of the stored monitors node


def signature_node(fn: Callable[..., Any], provided: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keyword defaults of ``fn`` (a class or function) as a plain config node: tuples become
    lists, required parameters ``???``, and a ``seed`` parameter ``${seed}``. ``provided``: the
    arguments the framework passes (left out)."""
    from hydra_zen import kwargs_of
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.structured(kwargs_of(fn, zen_exclude=tuple(provided))), resolve=False)
    node.pop("_target_", None)
    if "seed" in node:
        node["seed"] = "${seed}"
    return node


# settings every scenario takes besides its own signature's (clframe.run.build applies them)
SCENARIO_COMMON: dict[str, Any] = {"boundaries": "known", "validation": 0.0, "first_experiences": None}


def component_node(registry: Registry, name: str) -> dict[str, Any]:
    """The config node of component ``name``: its name and its signature's defaults (a scenario's also
    ``SCENARIO_COMMON``)."""
    common = SCENARIO_COMMON if registry is SCENARIOS else {}
    return {"name": name, **common, **signature_node(registry.get(name), registry.provided)}


def monitors_node() -> dict[str, Any]:
    """``monitors:``: every registered monitor, switched on by its ``enabled_by_default``."""
    out = {}
    for name in MONITORS.names():
        cls = MONITORS.get(name)
        out[name] = {"enabled": bool(getattr(cls, "enabled_by_default", True)), **signature_node(cls)}
    return out


def yaml_options(group: str) -> list[str]:
    """The group options that are YAML files of the shipped config directory."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def options(group: str) -> list[str]:
    """Every option of a config group: its YAML files and, for component groups, the registered names."""
    generated = GROUP_REGISTRIES[group].names() if group in GROUP_REGISTRIES else []
    return sorted(set(yaml_options(group)) | set(generated))


def register() -> None:
    """Store the generated group options and the ``monitors`` node in Hydra's ConfigStore (once per
    component; call before composing). Options with a YAML file of their own keep it."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, registry in GROUP_REGISTRIES.items():
        yaml = set(yaml_options(group))
        for name in registry.names():
            if name in yaml or (group, name) in _registered:
                continue
            package = registry.key.format(name=name) if group == "strategy" else group
            try:
                node = component_node(registry, name)
            except ConfigError:  # a plug-in that fails to load: choosing it reports why (validate)
                node = {"name": name}
            store.store(group=group, name=name, node=node, package=package)
            _registered.add((group, name))
    names = tuple(MONITORS.names())
    if names != _monitors_stored[0]:  # again when a monitor was registered since
        store.store(name="clframe_monitors", node={"monitors": monitors_node()})
        _monitors_stored[0] = names
