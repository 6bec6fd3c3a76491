"""Errors that clframe reports to users instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


class ConfigError(ValueError):
    """A config, override or registry name is wrong; raised before any training."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk; the message says where to put it or how to fetch it."""


class CheckpointError(ConfigError):
    """A checkpoint cannot be used: missing, corrupt, unsafe to unpickle, or from another run."""


class StorageError(RuntimeError):
    """A file or directory of the run cannot be created or written (read-only, disk full, ...); the
    message names the path and the cause."""


# what torch.save raises when the file under it cannot be written (e.g. a full disk)
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "inline_container")


def _free_space(path: Path) -> str:
    import shutil

    for d in (path, *path.parents):
        if d.exists():
            free = shutil.disk_usage(d).free
            return f" ({free / 2**20:.1f} MB free on that disk)" if free < 64 * 2**20 else ""
    return ""


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn a failed write of ``path`` (an ``OSError``, or torch.save's ``RuntimeError``) into a
    ``StorageError`` that names the file and the cause."""
    path = Path(path)
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        if isinstance(e, DatasetNotFoundError):
            raise
        target = e.filename if getattr(e, "filename", None) else path
        raise StorageError(f"Cannot write {target}: {e.strerror or e}{_free_space(path)}.") from None
    except RuntimeError as e:
        if not any(m in str(e) for m in _TORCH_WRITE_FAILED):
            raise
        raise StorageError(f"Cannot write {path}: the write failed{_free_space(path)} "
                           f"({str(e).strip().splitlines()[0]}).") from None


class DivergenceError(RuntimeError):
    """A loss term or a parameter became NaN or infinite; training stopped."""


class StoppedBetweenSteps(Exception):
    """An engine stopped on a signal between two steps, where the state is consistent, before the run
    wrote its checkpoint (Lightning's ``Trainer.fit`` does, at the end of the stream); the runner then
    writes one and raises ``RunInterrupted``."""


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


def warn(message: str) -> None:
    """Print ``warning: <message>`` to stderr, from the main rank only."""
    import sys

    from clframe.run.distributed import is_main_rank

    if is_main_rank():
        print(f"warning: {message}", file=sys.stderr)


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
