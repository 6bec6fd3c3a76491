"""Summary numbers and the figure of the per-task plasticity diagnostics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from clframe.evaluation.plots import pyplot


def task_windows(n_tasks: int, width: int = 10) -> dict[str, slice]:
    """The two windows the loss-of-plasticity results compare: tasks 2..(width+1) (1-based, after the
    first task) and the last ``width`` tasks."""
    return {f"tasks_2_{width + 1}": slice(1, 1 + width), f"last{width}": slice(max(n_tasks - width, 0), n_tasks)}


def plasticity_summary(rows: list[dict[str, float]], acc_matrix: list[list[float]]) -> dict[str, Any]:
    """``plasticity``: the per-task rows; and, for each window of ``task_windows``, the mean end-of-task
    accuracy (the accuracy-matrix diagonal: trainability on random labels), online accuracy (or, for
    regression, online error) and plasticity."""
    diag = np.diag(np.array(acc_matrix)) if acc_matrix else np.array([])
    out: dict[str, Any] = {"plasticity": rows, "task_end_acc": diag.tolist()}
    keys = [k for k in ("online_acc", "online_error", "plasticity") if rows and k in rows[0]]
    series = {"task_end_acc": diag, **{k: np.array([r[k] for r in rows]) for k in keys}}
    for name, window in task_windows(len(diag)).items():
        for key, values in series.items():
            part = values[window]
            out[f"{key}_{name}"] = float(np.nanmean(part)) if len(part) else None
    return out


def plot_plasticity(rows: list[dict[str, float]], task_end_acc: list[float], path: Path, title: str = "") -> Path:
    """One panel per diagnostic over tasks; layer-wise diagnostics get one line per layer."""
    groups: dict[str, list[str]] = {"accuracy": [], "plasticity": ["plasticity"], "grad_norm": ["grad_norm"]}
    for key in rows[0] if rows else []:
        if "/" in key:
            groups.setdefault(key.split("/")[0], []).append(key)
    plt = pyplot()
    fig, axes = plt.subplots(2, (len(groups) + 1) // 2, figsize=(4 * ((len(groups) + 1) // 2), 7), squeeze=False)
    tasks = np.arange(1, len(rows) + 1)
    for ax, (name, keys) in zip(axes.flat, groups.items()):
        if name == "accuracy" and rows and "online_error" in rows[0]:
            name = "online squared error"
            ax.plot(tasks, [r["online_error"] for r in rows], label="online")
        elif name == "accuracy":
            ax.plot(tasks, [r["online_acc"] for r in rows], label="online")
            ax.plot(np.arange(1, len(task_end_acc) + 1), task_end_acc, label="end of task")
        for k in keys:
            ax.plot(tasks, [r[k] for r in rows], label=k.split("/", 1)[-1])
        ax.set_title(name)
        ax.set_xlabel("task")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
