"""Run and sweep directories that never collide.

The default names keep their readable part (``runs/<experiment>/<strategies>-s<seed>-<time>``,
``multirun/<experiment>/<time>``) and add a short hash of what makes the run (its resolved
config, or a sweep's overrides). ``claim`` creates the directory atomically: a second run that
finds the name taken picks the next free one (``-2``, ``-3``, ...), so two runs started in the
same second never share a directory. A directory the user names explicitly is used as given,
but never one that already holds another run's results.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from clframe.errors import ConfigError, StorageError

# the shipped defaults of configs/config.yaml, recognised unresolved so that only they get the unique suffix
DEFAULT_RUN_DIR = "runs/${experiment_name}/${clf_names:${strategies}}-s${seed}-${now:%Y%m%d-%H%M%S}"
DEFAULT_SWEEP_DIR = "multirun/${experiment_name}/${now:%Y%m%d-%H%M%S}"
# what a run writes; a directory holding any of them holds a run
RESULTS = ("config.yaml", "summary.json", "metrics.csv", "checkpoints")


def short_hash(obj: Any, n: int = 6) -> str:
    """The first ``n`` hex digits of the SHA-1 of ``obj`` as canonical JSON."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def holds_run(path: Path) -> bool:
    """True if ``path`` or a directory below it holds a run's results (a sweep holds several)."""
    # Hydra's own record (.hydra/config.yaml) is not a result
    found = (p for name in RESULTS for p in path.rglob(name)) if path.is_dir() else ()
    return any(".hydra" not in p.relative_to(path).parts for p in found)


def _storage_error(path: Path, e: OSError, what: str) -> StorageError:
    return StorageError(f"Cannot {what} {path}: {e.strerror or e}. Choose a writable location with "
                        "hydra.run.dir=<dir> (hydra.sweep.dir=<dir> for a sweep) or run from a writable directory.")


def _check_writable(path: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise _storage_error(path, e, "write into the run directory") from None


def claim(path: str | Path, unique: bool) -> tuple[Path, bool]:
    """Create the run (or sweep) directory ``path`` atomically and return it with whether this call
    created it.

    Args:
        path: the directory wanted.
        unique: True for a generated name: if it is taken, take ``<path>-2``, ``<path>-3``, ...
            False for a name the user chose: an existing directory is used if it holds no run;
            one that does is refused (its results would be overwritten).

    Raises ``StorageError`` naming the directory and the cause when it cannot be created or
    written, and ``ConfigError`` for an explicit directory that holds another run.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _storage_error(path.parent, e, "create the directory") from None
    for i in range(1, 10_000):
        candidate = path if i == 1 else path.with_name(f"{path.name}-{i}")
        try:
            os.mkdir(candidate)  # atomic: exactly one of several racing processes gets a name
            return candidate, True
        except FileExistsError:
            if unique:
                continue
            if not candidate.is_dir():
                raise StorageError(f"Cannot use {candidate} as the run directory: it is a file. Choose another "
                                   "with hydra.run.dir=<dir>.") from None
            if holds_run(candidate):
                raise ConfigError(f"{candidate} already holds a run (its results would be overwritten). Continue it "
                                  f"with resume={candidate}, or choose another directory with hydra.run.dir=<dir> "
                                  "(hydra.sweep.dir=<dir> for a sweep).") from None
            _check_writable(candidate)
            return candidate, False
        except OSError as e:
            raise _storage_error(candidate, e, "create the run directory") from None
    raise StorageError(f"Cannot find a free run directory name next to {path}.")


def remove_if_unused(path: Path) -> None:
    """Delete ``path`` if no run wrote results into it (a run refused before training leaves no
    directory behind; Hydra's own ``.hydra/`` and log files do not count)."""
    if path.is_dir() and not holds_run(path):
        shutil.rmtree(path, ignore_errors=True)


def launched_child() -> bool:
    """True in a process that a launcher started for rank > 0 of a multi-process run (Lightning's
    DDP launcher, torchrun, Slurm): it writes into the directory rank 0 claimed."""
    env = os.environ
    return any(env.get(k, "0") not in ("", "0") for k in ("LOCAL_RANK", "RANK", "NODE_RANK")) or \
        (int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_PROCID", "0") != "0")
