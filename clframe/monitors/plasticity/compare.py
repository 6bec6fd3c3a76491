"""The loss-of-plasticity comparison figure: per-task diagnostics per group of runs, over seeds.

Reads what the ``plasticity`` monitor leaves in summary.json: ``plasticity`` (one row per task) and
``task_end_acc`` (the accuracy-matrix diagonal).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from clframe.compare.bands import Band, band, finish_figure, num

if TYPE_CHECKING:
    from clframe.compare.runs import Comparison, Group, Run

PNG = "plasticity_comparison.png"

ACC_TITLES = {"task_end_acc": "end-of-task accuracy", "online_acc": "online accuracy", "online_error": "online error"}
# layer-wise key prefix -> (panel title, reduction over the layers of one task row)
LAYER_PANELS = {
    "dead_fraction": ("mean fraction of dead units over layers", np.mean),
    "sigma_max": ("largest σ_max over layers", np.max),
    "effective_rank": ("mean effective rank over layers", np.mean),
}


def plasticity_rows(run: Run) -> list[dict[str, Any]]:
    """The run's per-task plasticity rows (empty without the ``plasticity`` monitor)."""
    rows = run.summary.get("plasticity")
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _layer_reduce(row: dict[str, Any], prefix: str) -> float:
    """The row's ``<prefix>/<layer>`` values reduced over layers as ``LAYER_PANELS`` says; NaN without any."""
    values = [x for k, v in row.items() if k.startswith(f"{prefix}/") and math.isfinite(x := num(v))]
    return float(LAYER_PANELS[prefix][1](values)) if values else math.nan


def accuracy_key(runs: list[Run], metric: Literal["task_end", "online"] = "task_end") -> str:
    """The key of the first panel for these runs: ``task_end_acc`` when ``metric="task_end"``, every run has
    it and the rows are a classifier's (``online_acc``); otherwise the online metric of the rows (``online_acc``,
    or ``online_error`` for regression, whose accuracy matrix holds negative squared errors).

    Args:
        runs: runs with plasticity rows.
        metric: ``"task_end"`` (default) or ``"online"``.
    """
    online = "online_acc" if any("online_acc" in r for run in runs for r in plasticity_rows(run)) else "online_error"
    if metric == "task_end" and online == "online_acc" and all(run.summary.get("task_end_acc") for run in runs):
        return "task_end_acc"
    return online


def group_series(group: Group, metric: Literal["task_end", "online"] = "task_end") -> dict[str, Band] | None:
    """What the figure draws for one group: the accuracy series (keyed by ``accuracy_key``), then those of
    ``LAYER_PANELS`` that its rows record, each a ``Band`` over the group's runs with plasticity rows.

    Args:
        group: the runs of one configuration (seeds aside).
        metric: the first panel's series, see ``accuracy_key`` (default ``"task_end"``).

    Returns:
        None when no run of the group has plasticity rows.
    """
    runs = [r for r in group.runs if plasticity_rows(r)]
    if not runs:
        return None
    key = accuracy_key(runs, metric)
    if key == "task_end_acc":
        acc = [[num(v) for v in r.summary["task_end_acc"]] for r in runs]
    else:
        acc = [[num(row.get(key)) for row in plasticity_rows(r)] for r in runs]
    series = {key: band(acc)}
    for prefix in LAYER_PANELS:
        per_run = [[_layer_reduce(row, prefix) for row in plasticity_rows(r)] for r in runs]
        if any(math.isfinite(v) for values in per_run for v in values):
            series[prefix] = band(per_run)
    return series


def plot_plasticity_comparison(cmp: Comparison, path: Path,
                               metric: Literal["task_end", "online"] = "task_end") -> Path | None:
    """Four panels over the task index, one line per group (mean over seeds, min–max band): accuracy (see
    ``accuracy_key``), then the ``LAYER_PANELS`` diagnostics. Each group spans its own number of tasks.

    Args:
        cmp: the grouped runs.
        path: the PNG to write.
        metric: the first panel's series, ``"task_end"`` (default) or ``"online"``.

    Returns:
        ``path``, or None (nothing written) when no run has plasticity rows.
    """
    drawn = [(g, s) for g in cmp.groups if (s := group_series(g, metric))]
    if not drawn:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_legend_rows = (len(drawn) + 1) // 2
    height = 4.2 + 0.22 * n_legend_rows
    fig = Figure(figsize=(17, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 1 + len(LAYER_PANELS))
    acc_keys = list(dict.fromkeys(next(iter(s)) for _, s in drawn))
    titles = [" / ".join(ACC_TITLES[k] for k in acc_keys), *(t for t, _ in LAYER_PANELS.values())]
    handles = []
    for g, series in drawn:
        color = None
        for ax, b in zip(axes, [series[next(iter(series))], *(series.get(p) for p in LAYER_PANELS)]):
            if b is None:
                continue
            (line,) = ax.plot(b.tasks, b.mean, lw=1.4, color=color, marker="o" if len(b.mean) == 1 else None)
            color = line.get_color()
            ax.fill_between(b.tasks, b.lo, b.hi, color=color, alpha=0.2, lw=0)
        n = sum(1 for r in g.runs if plasticity_rows(r))
        handles.append((line, f"{g.label} (n={n})"))
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("task")
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
    title = "Loss-of-plasticity diagnostics per task: mean over seeds, band min–max"
    return finish_figure(fig, cmp, title, handles, n_legend_rows, height, path, top_inches=0.75,
                         left=0.04, right=0.99, wspace=0.22)
