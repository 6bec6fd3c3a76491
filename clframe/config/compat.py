"""Config keys renamed between clframe versions, so an old config gets a precise error.

An old key is never silently mapped: the run would then not be the one the user's file
describes if the meaning changed too. The message names the new key and how to write it.
"""

from __future__ import annotations

import json
from typing import Any

# old dotted key -> (new dotted key, clframe version that renamed it)
RENAMED: dict[str, tuple[str, str]] = {
    "train.accelerator": ("trainer.accelerator", "0.2"),
    "train.devices": ("trainer.devices", "0.2"),
    "train.engine": ("trainer.engine", "0.2"),
    # 0.3: what observes a run is a monitor, configured under monitors.<name>
    "eval.every": ("monitors.continual.every", "0.3"),
    "eval.subset": ("monitors.continual.subset", "0.3"),
    "eval.on": ("monitors.continual.on", "0.3"),
    "eval.plasticity": ("monitors.plasticity.enabled", "0.3"),
    "eval.plasticity_every": ("monitors.plasticity.every", "0.3"),
    "eval.plasticity_probe": ("monitors.plasticity.probe", "0.3"),
    "eval.online": ("monitors.online.enabled", "0.3"),
    "eval.online_window": ("monitors.online.window", "0.3"),
    "eval.ece_bins": ("monitors.online.ece_bins", "0.3"),
}
# an old value that now means another key: (old key, old value) -> (new key, new value)
SWITCHED_OFF = {("eval.every", None): ("monitors.continual.enabled", False)}


def _yaml(key: str, value: Any) -> str:
    """``a.b.c`` and ``v`` as a nested YAML flow mapping: ``a: {b: {c: v}}``."""
    text = json.dumps(value) if value is not None else "null"
    *parents, leaf = key.split(".")
    out = f"{leaf}: {text}"
    for p in reversed(parents[1:]):
        out = f"{p}: {{{out}}}"
    return f"{parents[0]}: {{{out}}}" if parents else out


def renamed_message(key: str, value: Any = None) -> str | None:
    """The error text for ``key`` if an older clframe used it, else None.

    Args:
        key: the dotted config key as written by the user.
        value: its value, shown in the suggested replacement (default None: shown as ``...``).
    """
    if key not in RENAMED:
        return None
    new, version = RENAMED[key]
    what = f"'{key}' was renamed to '{new}'"
    if (key, value) in SWITCHED_OFF:
        new, value = SWITCHED_OFF[(key, value)]
        what = f"'{key}: null' became '{new}: {json.dumps(value)}'"
    shown = "..." if value is None else json.dumps(value) if isinstance(value, bool) else value
    in_yaml = _yaml(new, "..." if value is None else value)
    return f"{what} in clframe {version}. On the command line write {new}={shown}; in a YAML file write {in_yaml}."
