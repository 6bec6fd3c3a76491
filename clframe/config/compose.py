"""Composing a run's config with Hydra outside a Hydra app, and checking command-line overrides
before Hydra sees them (unknown group options and keys name the valid ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clframe.config.compat import renamed_message
from clframe.config.paths import CONFIG_DIR
from clframe.config.schema import COMPONENT_KEYS
from clframe.errors import ConfigError, did_you_mean, unknown


def _names(node: Any) -> str:
    """``${clf_names:${strategies}}``: the strategy keys joined by '+', for run directory names."""
    keys = list(node.keys()) if isinstance(node, DictConfig | dict) else []
    return "+".join(map(str, keys)) or "none"


def _has(node: Any, name: str) -> bool:
    """``${clf_has:${strategies},cumulative}``: whether the run's strategies include ``name`` (e.g. an
    experiment that builds the stream a strategy needs only when that strategy is chosen)."""
    return isinstance(node, DictConfig | dict) and name in node


def _pick(node: Any, choices: Any, default: Any) -> Any:
    """``${clf_pick:${strategies},{replay: 0.1},0.03}``: the value of ``choices`` for the first of the run's
    strategies it names, else ``default`` (e.g. an experiment that ships each strategy's learning rate
    from its paper's recipe; a command-line value replaces the whole choice)."""
    keys = list(node.keys()) if isinstance(node, DictConfig | dict) else []
    return next((choices[k] for k in keys if k in choices), default)


OmegaConf.register_new_resolver("clf_names", _names, replace=True)
OmegaConf.register_new_resolver("clf_has", _has, replace=True)
OmegaConf.register_new_resolver("clf_pick", _pick, replace=True)


GROUPS = ("scenario", "backbone", "head", "hypernet", "strategy", "experiment")


def group_options(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """Every option of a config group: its YAML files and, for the component groups, every registered
    name (their nodes are generated from the signatures, ``clframe.config.defaults``)."""
    from clframe.config.defaults import options

    if config_dir != CONFIG_DIR:
        return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
    return options(group)


def check_overrides(overrides: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Catch unknown group options and unknown keys in command-line overrides before Hydra does,
    with messages that name the valid choices and the closest match."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:
        raise ConfigError(f"Cannot parse overrides {overrides}: {e}") from e
    group_choice: list[str] = []
    # options in extra config directories are Hydra's to find; only ours are checked here
    extra_dirs = any(o.key_or_group.startswith("hydra.searchpath") for o in parsed)
    for o in parsed:
        key = o.key_or_group
        if key in GROUPS and not o.is_delete():
            values = [o.value()] if not o.is_sweep_override() else list(o.sweep_iterator())
            for v in values:
                for choice in v if isinstance(v, list) else [v]:
                    if choice is None:
                        raise ConfigError(f"'{key}=null' is not a choice; options: {', '.join(group_options(key))}"
                                          + (" (or strategy=[] for none)." if key == "strategy" else "."))
                    if not extra_dirs and str(choice) not in group_options(key, config_dir):
                        raise unknown(f"{key} option", str(choice), group_options(key, config_dir))
            group_choice.append(f"{key}={_fmt(values[0])}")
    if extra_dirs:
        group_choice += [o.input_line for o in parsed if o.key_or_group.startswith("hydra.searchpath")]
    base = OmegaConf.to_container(compose(group_choice, config_dir, check=False), resolve=False)
    for o in parsed:
        key = o.key_or_group
        if key in GROUPS or key.startswith("hydra") or o.is_add() or o.is_force_add() or o.is_delete():
            continue
        node: Any = base
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                if (msg := renamed_message(key, o.value())) is not None:
                    raise ConfigError(msg)
                where = ".".join(parts[:depth]) or "the top level"
                valid = list(node) if isinstance(node, dict) else []
                # a component named by dotted path may take keys its node does not list; a near miss is a typo
                close = did_you_mean(part, valid)
                addable = isinstance(node, dict) and parts[0] in COMPONENT_KEYS and not close
                hint = (f" A component named by dotted path takes keys its node does not list: write "
                        f"'+{key}=...'." if addable else "")
                if addable and parts[0] == "strategies" and depth == 1 and part in group_options("strategy"):
                    hint = _strategy_hint(key, part)  # '+' would add the strategy to the run: not a fix
                raise ConfigError(
                    f"Unknown key '{key}' ('{part}' is not in {where}).{close} "
                    f"Valid keys there: {', '.join(map(str, valid)) or '(none)'}.{hint}"
                )
            node = node[part]
        settings = ".".join(parts[1:])
        if parts[0] == "strategies" and len(parts) > 2 and _holds(base.get("strategy_settings"), parts[1:]):
            # validate merges strategy_settings over strategies: this override would be lost without a word
            raise ConfigError(f"'{o.input_line}' would not apply: the config's strategy_settings.{settings} is merged "
                              f"over strategies.{parts[1]}. Set strategy_settings.{settings}=... instead.")


def _holds(node: Any, parts: list[str]) -> bool:
    """Whether nested mapping ``node`` has the key path ``parts``."""
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _strategy_hint(key: str, name: str) -> str:
    """How to set strategy ``name``'s settings when the run does not choose it."""
    other = "replay" if name == "naive" else "naive"
    return (f" Choose it with strategy={name} (strategy=[...,{name}] to combine); in a strategy sweep, e.g. "
            f"'clframe run -m strategy={other},{name} {key}=...', it applies to the jobs that choose {name}.")


def _fmt(v: Any) -> str:
    return "[" + ",".join(map(str, v)) + "]" if isinstance(v, list) else str(v)


def compose(overrides: list[str] | None = None, config_dir: Path = CONFIG_DIR, check: bool = True) -> DictConfig:
    """Compose ``config.yaml`` with ``overrides`` (Hydra syntax) outside a Hydra app."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    from clframe.config.defaults import register

    register()  # the generated group options and monitors
    overrides = list(overrides or [])
    if check:
        check_overrides(overrides, config_dir)
    try:
        with initialize_config_dir(str(config_dir), version_base="1.3"):
            return hydra_compose("config", overrides=overrides)
    except HydraException as e:
        raise ConfigError(str(e)) from e
