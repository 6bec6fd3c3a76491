"""Errors that clframe reports to users instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A config, override or registry name is wrong; raised before any training."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk; the message says where to put it or how to fetch it."""


class CheckpointError(ConfigError):
    """A checkpoint cannot be used: missing, corrupt, unsafe to unpickle, or from another run."""


class DivergenceError(RuntimeError):
    """A loss term or a parameter became NaN or infinite; training stopped."""


class RunInterrupted(Exception):
    """SIGTERM or SIGINT stopped a run after it wrote a checkpoint.

    Args:
        signum: the signal number.
        checkpoint: the checkpoint written, or None if none could be.
        run_dir: the run directory to resume.
    """

    def __init__(self, signum: int, checkpoint: str | None, run_dir: str) -> None:
        import signal

        self.signum, self.checkpoint, self.run_dir = signum, checkpoint, run_dir
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (none could be written)"
        super().__init__(f"{name} received: stopped with {where}. Resume with: clframe run resume={run_dir}")


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
