"""``resume=<run_dir | checkpoint | auto>``: which checkpoint a run continues from, with which config.

A resumed run keeps the config it was started with: settings that would change the
training (anything outside ``SAFE``) may not differ, so the resumed run is the run that
was interrupted. ``resume=auto`` looks for the latest run of the same config under
``runs/`` and ``multirun/`` and starts a new run when there is none.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from clframe.checkpoint.files import (
    checkpoint_dir,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from clframe.errors import CheckpointError

# settings a resumed run may change: they do not alter what is trained
SAFE = ("resume", "resume_trust", "logger", "checkpoint", "train.num_threads", "trainer.engine")
GROUP_KEYS = {"scenario": "scenario", "backbone": "backbone", "head": "head", "strategy": "strategies",
              "experiment": ""}
SEARCH_ROOTS = ("runs", "multirun")


@dataclass
class Resume:
    """A checkpoint to continue from.

    Args:
        config: the config the resumed run uses (the saved one, with any safe changes).
        run_dir: the run directory the run continues in.
        path: the checkpoint file.
        state: its loaded content.
    """

    config: dict[str, Any]
    run_dir: Path
    path: Path
    state: dict[str, Any]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or not d:
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _safe(key: str) -> bool:
    return any(key == s or key.startswith(s + ".") for s in SAFE)


def differences(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted keys outside ``SAFE`` whose values differ: key -> (saved, current)."""
    a, b = _flatten(saved), _flatten(current)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if not _safe(k) and k != "hydra" and not k.startswith("hydra.") and a.get(k) != b.get(k)}


def _touched(key: str, overrides: list[str]) -> bool:
    for o in overrides:
        name = o.split("=", 1)[0].lstrip("+~")
        name = GROUP_KEYS.get(name, name)
        if name == "" or key == name or key.startswith(name + "."):
            return True
    return False


def upgrade(saved: dict[str, Any]) -> dict[str, Any]:
    """A config saved by an older clframe with the keys it lacks set to how that version behaved
    (a copy; so that resuming it trains what it trained before)."""
    saved = copy.deepcopy(saved)
    trainer = saved.setdefault("trainer", {})
    if "split_across_ranks" not in trainer:
        # before 0.3 each of several ranks took train.batch_size samples a step and kept a whole buffer
        devices = str(trainer.get("devices", 1))
        world = int(devices) * int(trainer.get("num_nodes", 1)) if devices.isdigit() else 1
        trainer["split_across_ranks"] = world == 1
    if "monitors" not in saved:
        # before 0.3 the evaluation monitors were switched and set under eval
        ev = saved.setdefault("eval", {})
        every = ev.pop("every", 10)
        saved["monitors"] = {
            "continual": {"enabled": every is not None, "every": every or 10, "subset": ev.pop("subset", 1000),
                          "on": ev.pop("on", "seen"), "seed": saved.get("seed", 0)},
            "online": {"enabled": ev.pop("online", False), "window": ev.pop("online_window", 100),
                       "ece_bins": ev.pop("ece_bins", 15)},
            "plasticity": {"enabled": ev.pop("plasticity", False), "every": ev.pop("plasticity_every", 1),
                           "probe": ev.pop("plasticity_probe", 256)},
        }
    return saved


def saved_config(run_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """The config a run directory was started with: its ``config.yaml``, or, when that is missing
    or unreadable, the config stored in its newest loadable checkpoint. Returns ``(config, how)``
    with ``how`` saying where it came from, or ``(None, why not)``."""
    reason = "config.yaml is missing"
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        if isinstance(saved, dict):
            return upgrade(saved), "config.yaml"
        reason = "config.yaml holds no mapping"
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        reason = f"config.yaml is unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    try:
        path, state = latest_checkpoint(run_dir)
    except CheckpointError as e:
        return None, f"{reason}, and {e}"
    return upgrade(state["config"]), f"checkpoint {path.name} ({reason})"


def find_latest_run(config: dict[str, Any], roots: tuple[str, ...] = SEARCH_ROOTS) -> Path | None:
    """The run directory under ``roots`` whose saved config matches ``config`` (outside ``SAFE``)
    and whose newest checkpoint is the most recent; None when no run has checkpoints.

    A run's config comes from its ``config.yaml`` or, if that is unreadable, from its checkpoints
    (``saved_config``). Raises ``CheckpointError`` when no run matches but a run with
    checkpoints exists whose config cannot be read at all: it may be this config's, and starting
    over would throw its progress away."""
    best: tuple[float, Path] | None = None
    unknown: list[str] = []
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        for ckpt_dir in root.rglob("checkpoints"):
            run_dir = ckpt_dir.parent
            files = list_checkpoints(run_dir) or list_checkpoints(run_dir, 0)
            if not files:
                continue
            saved, how = saved_config(run_dir)
            if saved is None:
                unknown.append(f"{run_dir}: {how}")
                continue
            if not differences(saved, config):
                if how != "config.yaml":
                    print(f"resume=auto: the config of {run_dir} comes from its {how}.")
                mtime = files[-1][1].stat().st_mtime
                if best is None or mtime > best[0]:
                    best = (mtime, run_dir)
    if best is None and unknown:
        raise CheckpointError(
            "resume=auto: no run of this config was found, but the config of these runs cannot be read, so they "
            f"may be this config's: {'; '.join(unknown)}. Resume one with resume=<run_dir>, or move it out of "
            f"{' and '.join(roots)}/ to start a new run.")
    return None if best is None else best[1]


def resolve(config: dict[str, Any], overrides: list[str] | None = None) -> Resume | None:
    """The checkpoint ``config['resume']`` points to, checked against ``config``; None for a fresh run.

    Args:
        config: the validated config of this invocation.
        overrides: the command-line overrides that made it (None: ``config`` was given whole,
            so it must match the saved config outside ``SAFE``). With overrides, settings the
            user did not touch come from the saved config; touched ones must match it.

    The checkpoint is the single-process file, or rank 0's of a multi-process run (see ``for_rank``).
    """
    target = config.get("resume")
    if not target:
        return None
    if target == "auto":
        found = find_latest_run(config)
        if found is None:
            print("resume=auto: no earlier run of this config with a checkpoint under "
                  f"{' or '.join(SEARCH_ROOTS)}/; starting a new run.")
            return None
        target = found
    path, state = latest_checkpoint(target)
    run_dir = path.parent.parent
    saved = upgrade(state["config"])
    diffs = differences(saved, config)
    conflicts = diffs if overrides is None else {k: v for k, v in diffs.items() if _touched(k, overrides)}
    if conflicts:
        listed = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in conflicts.items())
        raise CheckpointError(
            f"Checkpoint {path} belongs to a run with a different config ({listed}). A resumed run keeps its "
            f"config; only {', '.join(SAFE)} may change. Drop those overrides (clframe run resume={run_dir}) "
            "or start a new run without resume=."
        )
    merged = copy.deepcopy(saved)
    # safe settings: this invocation's where it set them (all of them for a whole config), else the saved ones
    for key, value in _flatten(config).items():
        if _safe(key) and (overrides is None or key == "resume" or _touched(key, overrides)):
            *parents, leaf = key.split(".")
            node = merged
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = copy.deepcopy(value)
    return Resume(merged, run_dir, path, state)


def for_rank(resume: Resume, rank: int, world_size: int) -> Resume:
    """``resume`` for ``rank`` of ``world_size`` processes: that rank's file of the same step."""
    written = resume.state.get("world_size", 1)
    if written != world_size:
        raise CheckpointError(f"Checkpoint {resume.path} was written by {written} process(es); this run has "
                              f"{world_size}. Resume with the same trainer.devices and trainer.num_nodes.")
    if world_size == 1 or rank == 0:
        return resume
    path = checkpoint_dir(resume.run_dir) / checkpoint_name(resume.state["step"], rank, world_size)
    return Resume(resume.config, resume.run_dir, path, load_checkpoint(path))


def fit_to_checkpoint(module: Any, resume: Resume) -> None:
    """Let every submodule that ``ResizesToCheckpoint`` resize itself to the checkpoint's weights
    first (e.g. a hypernetwork that grew during the run)."""
    from clframe.models.protocols import ResizesToCheckpoint

    saved = resume.state["module"]["model"]
    for name, m in module.named_modules():
        if isinstance(m, ResizesToCheckpoint):
            m.fit_to_state(saved, f"{name}." if name else "")


def restore(module: Any, loader: Any, resume: Resume, recorder: Any, checkpointer: Any) -> None:
    """Put a freshly built run at the checkpoint's position: the stream, the monitors and the
    recorder's rows now; the module, strategies and RNGs when training starts (the optimizer exists
    only then: ``checkpointer.setup``). A finished run is restored at once; only its summary is
    written again."""
    state = resume.state
    fit_to_checkpoint(module, resume)
    check_model(resume, module.state_dict())
    for key, monitor in module.monitors.items():
        if key in state["monitors"]:
            monitor.load_state_dict(state["monitors"][key])
    if recorder is not None and state["recorder"] is not None:
        recorder.load_state_dict(state["recorder"])
    if state["finished"]:
        print(f"{resume.run_dir} had already finished; writing its summary again.")
        module.load_training_state(state["module"])
        return
    loader.seek(state["step"])
    module.resuming = True
    checkpointer.resume_state = state


def check_model(resume: Resume, model_state: dict[str, Any]) -> None:
    """Raise ``CheckpointError`` if the checkpoint's weights do not fit ``model_state``."""
    saved = resume.state["module"]["model"]
    missing = [k for k in model_state if k not in saved]
    extra = [k for k in saved if k not in model_state]
    shapes = [f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}" for k, v in model_state.items()
              if k in saved and torch.is_tensor(v) and tuple(saved[k].shape) != tuple(v.shape)]  # not extra state
    if missing or extra or shapes:
        parts = ([f"missing {', '.join(missing[:5])}"] if missing else []) + \
                ([f"unexpected {', '.join(extra[:5])}"] if extra else []) + \
                ([f"shape mismatch {'; '.join(shapes[:5])}"] if shapes else [])
        raise CheckpointError(f"Checkpoint {resume.path} does not fit this model ({'; '.join(parts)}); was it "
                              "written by another version of the backbone or head?")
