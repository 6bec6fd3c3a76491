"""What a finished run writes: ``summary.json`` (the core's entries and every monitor's), the core
figures and every monitor's files, and the same to wandb."""

from __future__ import annotations

import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

import clframe
from clframe.checkpoint.checkpointer import Checkpointer
from clframe.checkpoint.resume import Resume
from clframe.core.module import CLModule
from clframe.core.monitor import ProvidesCurve
from clframe.data.holdout import scored_on
from clframe.errors import writing
from clframe.evaluation.curve import Curve
from clframe.evaluation.curve_metrics import curve_summary
from clframe.evaluation.metrics import summary_metrics
from clframe.evaluation.plots import plot_acc_matrix, plot_curves
from clframe.run.build import Built
from clframe.run.records import RunRecorder


def boundary_curve(module: CLModule) -> Curve:
    """The curve of the boundary evaluations alone (before training, then each experience end)."""
    T = len(module.stream)
    return Curve([0, *module.boundaries], [-1, *range(len(module.boundaries))],
                 np.array([module.initial_accs, *module.acc_matrix]).reshape(-1, T), module.boundaries)


def run_curve(module: CLModule) -> tuple[Curve, str]:
    """The accuracy curve of the run and where it comes from: the first monitor that records one
    (the continual evaluator), else the boundary evaluations."""
    for key, monitor in module.monitors.items():
        if isinstance(monitor, ProvidesCurve):
            return monitor.curve(module), key
    return boundary_curve(module), "boundary"


# the summary entries that measure time or name places, not results: a resumed or repeated run differs there
TIMING_KEYS = frozenset({"fit_time_s", "train_time_s", "eval_time_s", "checkpoint_time_s", "train_samples_per_s",
                         "wall_time_s", "startup_s", "startup_from", "checkpoint_save_s", "checkpoint_mb",
                         "resumed_from", "run_dir"})


def fit_times(fit_time: float, eval_time: float, checkpointer: Checkpointer) -> dict[str, float]:
    """Where the training phase's seconds went: ``fit_time_s`` (first step to the end of the stream),
    ``eval_time_s`` (inside ``evaluation_mode``: the accuracy matrix and the monitors),
    ``checkpoint_time_s`` (writing checkpoints) and ``train_time_s``, the rest: the training steps."""
    ckpt = float(sum(checkpointer.save_times))
    return {"fit_time_s": fit_time, "train_time_s": max(fit_time - eval_time - ckpt, 0.0), "eval_time_s": eval_time,
            "checkpoint_time_s": ckpt}


def make_summary(built: Built, curve: Curve, source: str, times: dict[str, float], wall_time: float, run_dir: Path,
                 checkpointer: Checkpointer, resume: Resume | None, startup: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The run's ``summary.json``: final metrics, the metrics of ``curve`` (from ``source``: see
    ``run_curve``), every monitor's entries, throughput (``times``: ``fit_times``; ``train_samples_per_s``
    counts the training steps' time only), start-up time (``startup``: ``startup_s``, the
    seconds to the first optimizer step, None without one; ``startup_from``, where they are counted from:
    ``clframe.run.startup``), checkpoints, versions."""
    c, module, ev = built.config, built.module, built.config["eval"]
    monitors: dict[str, Any] = {}
    for monitor in module.monitors.values():
        monitors.update(monitor.summary(module))
    last = checkpointer.last_path
    samples = module.samples_all_ranks or module.samples_seen  # stream samples trained on, all ranks
    return {
        "experiment_name": c["experiment_name"],
        "strategies": list(c["strategies"]),
        "scenario": built.scenario.name,
        "scored_on": scored_on(built.scenario),  # validation: scenario.validation held out, no test data seen
        "seed": c["seed"],
        "objective": module.objective.name,
        "score": module.objective.score_name,  # what acc_matrix and the accuracy metrics hold
        "acc_matrix": module.acc_matrix,
        **summary_metrics(module.acc_matrix, module.initial_accs),
        **curve_summary(curve, windows=(10, 100), beta=ev["lca_beta"], gap_window=ev["gap_window"]),
        "curve_source": source,
        **monitors,
        "final_accs": module.acc_matrix[-1],
        "initial_accs": module.initial_accs,
        "final_losses": module.loss_log[-1] if module.loss_log else {},
        "steps": module.cl_step,
        "samples": samples,
        "world_size": built.loader.world_size,
        "rank_weight_max_abs_diff": module.rank_weight_diff,
        **times,
        "train_samples_per_s": samples / times["train_time_s"] if times["train_time_s"] > 0 else 0.0,
        "wall_time_s": wall_time,
        **(startup or {"startup_s": None, "startup_from": None}),
        "checkpoint_save_s": float(np.mean(checkpointer.save_times)) if checkpointer.save_times else None,
        "checkpoint_mb": last.stat().st_size / 2**20 if last is not None and last.exists() else None,
        "resumed_from": None if resume is None else str(resume.path),
        "run_dir": str(run_dir),
        "versions": {"clframe": clframe.__version__, "torch": torch.__version__, "lightning": version("lightning"),
                     "python": platform.python_version()},
    }


def write_results(built: Built, curve: Curve, summary: dict[str, Any], run_dir: Path, recorder: RunRecorder) -> None:
    """The figures (the accuracy ``curve``, the accuracy matrix, then each monitor's files),
    ``summary.json`` and the final metrics.csv; a full disk or a read-only directory is one line
    naming the file."""
    c, module = built.config, built.module
    title = f"{c['experiment_name']} | {'+'.join(c['strategies']) or 'naive'} | seed {c['seed']}"
    score = module.objective.score_name
    with writing(run_dir):
        figures = [plot_curves(curve, run_dir / "plots" / "accuracy_curves.png", title, score),
                   plot_acc_matrix(module.acc_matrix, run_dir / "plots" / "acc_matrix.png", title, score)]
        for monitor in module.monitors.values():
            figures += monitor.write(run_dir, module, title)
        recorder.write_summary(summary, figures)
