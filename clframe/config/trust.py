"""Configs that come from files never run code the user did not ask for.

A config names components by registered name or by dotted path (``my_pkg.nets:TinyNet``), and
importing a dotted path runs its module's code, then calling it runs more. A config the user
composed (command line, their YAML files) may do that: they asked for it. A config stored in a
checkpoint or a run directory may not: ``resume=`` and ``clframe ablate`` rebuild runs from such
configs, and a crafted file could name ``os:system``. While ``from_file`` is active,
``clframe.config.registry.import_dotted`` imports only the dotted paths the user's own config, the
shipped configs or the components' own defaults contain; registered names (built-ins and
installed entry points) need no import and always work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from clframe.config.paths import CONFIG_DIR
from clframe.config.registry import IMPORT_CHECKS, REGISTRIES, signature_params
from clframe.errors import ConfigError


class UntrustedConfigError(ConfigError):
    """A config read from a file names a dotted path that the user did not give."""


@dataclass(frozen=True)
class _Policy:
    source: str
    config: dict[str, Any]
    allowed: frozenset[str]
    hint: str


_POLICY: ContextVar[_Policy | None] = ContextVar("clframe_trust_policy", default=None)


def strings(obj: Any) -> set[str]:
    """Every string value in a nested config (dicts, lists)."""
    if isinstance(obj, str):
        return {obj}
    if isinstance(obj, dict):
        return set().union(*(strings(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list | tuple):
        return set().union(*(strings(v) for v in obj)) if obj else set()
    return set()


def _where(config: Any, value: str, prefix: str = "") -> str | None:
    """The dotted key of the first place ``value`` sits in ``config``."""
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else []
    for k, v in items:
        key = f"{prefix}.{k}" if prefix and isinstance(k, str) else f"{prefix}[{k}]" if prefix else str(k)
        if v == value:
            return key
        found = _where(v, value, key)
        if found:
            return found
    return None


def shipped() -> set[str]:
    """The strings of the shipped config files and the string defaults of every registered
    component: what clframe itself may name."""
    import yaml

    out: set[str] = set()
    for path in CONFIG_DIR.rglob("*.yaml"):
        try:
            out |= strings(yaml.safe_load(path.read_text()))
        except (OSError, yaml.YAMLError):
            continue
    for reg in REGISTRIES.values():
        for name in reg.names():
            try:
                params = signature_params(reg.get(name), reg.provided)
            except ConfigError:  # a broken plug-in is reported where it is used
                continue
            out |= {p.default for p in params.values() if isinstance(p.default, str)}
    return out


@contextmanager
def from_file(source: str, config: dict[str, Any], trusted: Any = None, hint: str = "") -> Iterator[None]:
    """While active, dotted paths may be imported only if they appear in ``trusted`` (the user's
    own config or overrides) or in what clframe ships.

    Args:
        source: where ``config`` was read, for the message, e.g. ``checkpoint runs/x/...ckpt``.
        config: the config read from the file (to name the key a refused path sits under).
        trusted: the user's own config or command-line overrides (default None: nothing extra).
        hint: how the user allows a path, appended to the message (default: give it on the
            command line).
    """
    policy = _Policy(source, config, frozenset(strings(trusted) | shipped()),
                     hint or "give it on the command line")
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


def check_import(path: str) -> None:
    """Raise ``UntrustedConfigError`` if a config from a file names ``path`` and the user did not."""
    policy = _POLICY.get()
    if policy is None or path in policy.allowed:
        return
    key = _where(policy.config, path) or "a component's settings"
    raise UntrustedConfigError(
        f"Refusing to import '{path}' ({key}), named by the config stored in {policy.source}: a config read "
        "from a file may name only registered components (built-ins and installed entry points), because "
        f"importing a dotted path runs its code. If you trust it, {policy.hint.format(key=key, path=path)}.")


IMPORT_CHECKS.append(check_import)  # registry.import_dotted asks before it imports
