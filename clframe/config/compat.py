"""Config keys renamed between clframe versions, so an old config gets a precise error.

An old key is never silently mapped: the run would then not be the one the user's file
describes if the meaning changed too. The message names the new key and how to write it.
"""

from __future__ import annotations

from typing import Any

# old dotted key -> (new dotted key, clframe version that renamed it)
RENAMED: dict[str, tuple[str, str]] = {
    "train.accelerator": ("trainer.accelerator", "0.2"),
    "train.devices": ("trainer.devices", "0.2"),
    "train.engine": ("trainer.engine", "0.2"),
}


def renamed_message(key: str, value: Any = None) -> str | None:
    """The error text for ``key`` if an older clframe used it, else None.

    Args:
        key: the dotted config key as written by the user.
        value: its value, shown in the suggested replacement (default None: shown as ``...``).
    """
    if key not in RENAMED:
        return None
    new, version = RENAMED[key]
    shown = "..." if value is None else value
    section, _, leaf = new.partition(".")
    return (f"'{key}' was renamed to '{new}' in clframe {version}. On the command line write {new}={shown}; "
            f"in a YAML file move '{leaf}' under '{section}:'.")
