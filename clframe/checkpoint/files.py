"""Checkpoint files: the whole training state at any step, written atomically, loaded safely.

A checkpoint is one ``torch.save`` of tensors and plain containers (dict, list, tuple,
str, int, float, bool, None), so it loads with ``torch.load(weights_only=True)``: no
arbitrary object is ever unpickled. Files are ``<run_dir>/checkpoints/step-<step>.ckpt``
(``-rank<r>`` appended under multi-process training, where every rank keeps its own
strategy state); each is written to a temporary file, synced and renamed, so a kill at
any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clframe.errors import CheckpointError, writing

FORMAT = 2  # 2 (clframe 0.3): the monitors' states under "monitors"; 1 is read too (see ``upgrade``)
KEYS = ("format", "clframe", "step", "experience", "finished", "config", "module", "rng", "monitors", "recorder")
NAME = re.compile(r"step-(\d+)(?:-rank(\d+))?\.ckpt$")
PLAIN = (str, int, float, bool, type(None), torch.dtype, torch.Size)


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_name(step: int, rank: int = 0, world_size: int = 1) -> str:
    return f"step-{step:08d}" + (f"-rank{rank}" if world_size > 1 else "") + ".ckpt"


# -- RNG ---------------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Every global RNG: torch (CPU and initialised CUDA devices), numpy and Python's."""
    np_state = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(_as_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _as_tuples(x: Any) -> Any:
    return tuple(_as_tuples(v) for v in x) if isinstance(x, list | tuple) else x


# -- what may go into a checkpoint --------------------------------------------------------------

def check_plain(obj: Any, where: str) -> None:
    """Raise ``TypeError`` naming the path of the first value that is neither a tensor nor a
    plain container, since such a value would need full unpickling to load."""
    if isinstance(obj, (Tensor, *PLAIN)):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where} has a key of type {type(k).__name__} ({k!r})")
            check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}")


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor moved to ``device`` (containers rebuilt, other values kept)."""
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


# -- files ---------------------------------------------------------------------------------------

def atomic_save(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file in ``path``'s directory, fsync, rename over ``path``. A failed
    write (e.g. a full disk) raises ``StorageError`` naming the file and leaves the older files whole."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.chmod(tmp, 0o644)
            with os.fdopen(fd, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a clframe checkpoint without unpickling arbitrary objects.

    Raises ``CheckpointError`` saying why when the file is missing, corrupt or truncated,
    needs full unpickling, or is not a clframe checkpoint of a format this version reads.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if re.search(r"unsupported global|can only (create new object|build)|call reduce", str(e), re.I):
            raise CheckpointError(
                f"Refusing to load {path}: it holds Python objects that only full unpickling can rebuild "
                f"({_unsupported(str(e))}). clframe loads checkpoints with torch.load(weights_only=True) because "
                "unpickling can run arbitrary code; its own checkpoints hold only tensors and plain containers. "
                "Resume from a checkpoint that clframe wrote."
            ) from e
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))  # torch's first line advises weights_only=False
        raise CheckpointError(f"Checkpoint {path} is corrupt or truncated "
                              f"({detail.group(1).strip() if detail else reason}).") from e
    except Exception as e:  # whatever else a damaged file makes torch.load raise (KeyError, struct.error, ...)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"Checkpoint {path} is corrupt or truncated ({reason}).") from e
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path} is not a clframe checkpoint (it has no 'format' entry).")
    state = upgrade(state)
    if state["format"] != FORMAT:
        raise CheckpointError(
            f"Checkpoint {path} has format {state['format']} (written by clframe {state.get('clframe', '?')}); "
            f"this clframe reads format {FORMAT}. Resume it with the clframe version that wrote it."
        )
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise CheckpointError(f"Checkpoint {path} is incomplete: it lacks {', '.join(missing)}.")
    return state


def upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of an older format in the current one: format 1 (clframe 0.2) kept the continual
    evaluator's state under ``evaluator`` and the other monitors' under ``extra``; both are monitors
    now, under ``monitors`` by name."""
    if state.get("format") == 1:
        monitors = dict(state.pop("extra", None) or {})
        evaluator = state.pop("evaluator", None)
        if evaluator is not None:
            monitors["continual"] = evaluator
        state = {**state, "format": 2, "monitors": monitors}
    return state


def _unsupported(message: str) -> str:
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    return f"unsupported global {m.group(1)}" if m else "not a tensor or plain container"


def list_checkpoints(run_dir: str | Path, rank: int | None = None) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoint files of ``run_dir`` for ``rank`` (None: single-process
    files), oldest first."""
    found = []
    for p in checkpoint_dir(run_dir).glob("step-*.ckpt"):
        m = NAME.match(p.name)
        if m and (None if m.group(2) is None else int(m.group(2))) == rank:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(target: str | Path, rank: int = 0, world_size: int = 1) -> tuple[Path, dict[str, Any]]:
    """The newest loadable checkpoint of a run directory (or ``target`` itself if it is a file), for
    ``rank`` of ``world_size`` processes.

    A newer file that fails to load is skipped with a warning, so a damaged last checkpoint
    falls back to the one before it; the error is raised only when none loads.
    """
    target = Path(target)
    if target.is_file():
        return target, load_checkpoint(target)
    if not target.is_dir():
        raise CheckpointError(f"resume={target}: no such run directory or checkpoint file.")
    # one process reading a multi-process run (to learn its config) reads rank 0's files
    files = list_checkpoints(target, rank) if world_size > 1 else \
        list_checkpoints(target, None) or list_checkpoints(target, 0)
    if not files:
        raise CheckpointError(
            f"resume={target}: no checkpoints in {checkpoint_dir(target)} "
            f"(checkpoint.enabled was false, or the run stopped before its first checkpoint)."
        )
    errors = []
    for _, path in reversed(files):
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        ranks = state.get("world_size", 1)
        missing = [r for r in range(ranks) if ranks > 1 and
                   not (path.parent / checkpoint_name(state["step"], r, ranks)).is_file()]
        if missing:  # a multi-process checkpoint is whole only when every rank wrote its file
            errors.append(f"Step {state['step']} lacks the files of rank(s) {missing}.")
            continue
        if errors:
            import warnings

            warnings.warn(f"Skipped unreadable newer checkpoints: {' '.join(errors)} Using {path}.", stacklevel=2)
        return path, state
    raise CheckpointError("No loadable checkpoint: " + " ".join(errors))


def prune(run_dir: str | Path, keep: int, rank: int | None = None) -> None:
    """Delete all but the ``keep`` newest checkpoints of ``rank``, and stale temporary files."""
    files = list_checkpoints(run_dir, rank)
    for _, p in files[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)
    for tmp in checkpoint_dir(run_dir).glob(".step-*.tmp"):
        # a temporary file of this rank is stale once a newer complete file exists
        m = NAME.search(tmp.name[1:].rsplit(".ckpt", 1)[0] + ".ckpt")
        same_rank = m is not None and (None if m.group(2) is None else int(m.group(2))) == rank
        if same_rank and files and int(m.group(1)) <= files[-1][0]:
            tmp.unlink(missing_ok=True)
