"""Errors that clframe reports to users instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A config, override or registry name is wrong; raised before any training."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk; the message says where to put it or how to fetch it."""


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest option, or ``""`` if none is close."""
    match = difflib.get_close_matches(str(name), list(options), n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def unknown(kind: str, name: str, options: Iterable[str]) -> ConfigError:
    """Build the error for an unknown ``name`` of ``kind``, listing the valid ``options``."""
    options = sorted(options)
    return ConfigError(
        f"Unknown {kind} '{name}'.{did_you_mean(name, options)} Valid: {', '.join(options) or '(none)'}."
    )
