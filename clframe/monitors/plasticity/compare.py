"""The loss-of-plasticity comparison figure: per-task diagnostics per group of runs, over seeds.

Reads what ``eval.plasticity=true`` leaves in summary.json: ``plasticity`` (one row per task) and
``task_end_acc`` (the accuracy-matrix diagonal).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from clframe.compare import Comparison, Group, Run

ACC_TITLES = {"task_end_acc": "end-of-task accuracy", "online_acc": "online accuracy", "online_error": "online error"}
# layer-wise key prefix -> (panel title, reduction over the layers of one task row)
LAYER_PANELS = {
    "dead_fraction": ("mean fraction of dead units over layers", np.mean),
    "sigma_max": ("largest σ_max over layers", np.max),
    "effective_rank": ("mean effective rank over layers", np.mean),
}


@dataclass
class Band:
    """One per-task series of a group: mean, min and max over its runs, each [T] (T: the longest run)."""

    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @property
    def tasks(self) -> np.ndarray:
        """1-based task indices [T]."""
        return np.arange(1, len(self.mean) + 1)


def plasticity_rows(run: Run) -> list[dict[str, Any]]:
    """The run's per-task plasticity rows (empty without ``eval.plasticity``)."""
    rows = run.summary.get("plasticity")
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _num(v: Any) -> float:
    """A JSON value as a float; NaN for null, text or booleans."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def _band(per_run: list[list[float]]) -> Band:
    """Mean, min and max over runs at each task; a run shorter than the longest counts where it has values."""
    table = np.full((len(per_run), max(map(len, per_run))), np.nan)  # [runs, T]
    for i, values in enumerate(per_run):
        table[i, : len(values)] = values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a task no run recorded: NaN, not a warning
        return Band(np.nanmean(table, 0), np.nanmin(table, 0), np.nanmax(table, 0))


def _layer_reduce(row: dict[str, Any], prefix: str) -> float:
    """The row's ``<prefix>/<layer>`` values reduced over layers as ``LAYER_PANELS`` says; NaN without any."""
    values = [x for k, v in row.items() if k.startswith(f"{prefix}/") and math.isfinite(x := _num(v))]
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
        acc = [[_num(v) for v in r.summary["task_end_acc"]] for r in runs]
    else:
        acc = [[_num(row.get(key)) for row in plasticity_rows(r)] for r in runs]
    series = {key: _band(acc)}
    for prefix in LAYER_PANELS:
        per_run = [[_layer_reduce(row, prefix) for row in plasticity_rows(r)] for r in runs]
        if any(math.isfinite(v) for values in per_run for v in values):
            series[prefix] = _band(per_run)
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
        for ax, band in zip(axes, [series[next(iter(series))], *(series.get(p) for p in LAYER_PANELS)]):
            if band is None:
                continue
            (line,) = ax.plot(band.tasks, band.mean, lw=1.4, color=color, marker="o" if len(band.mean) == 1 else None)
            color = line.get_color()
            ax.fill_between(band.tasks, band.lo, band.hi, color=color, alpha=0.2, lw=0)
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


def finish_figure(fig: Any, cmp: Comparison, title: str, handles: list, n_legend_rows: int, height: float,
                  path: str | Path, top_inches: float, **margins: float) -> Path:
    """Title (flagged when the runs' scenarios differ), the legend below the panels, fixed margins
    (no layout pass) and the PNG at ``path``.

    Args:
        fig: the figure.
        cmp: the comparison drawn.
        title: the figure title.
        handles: (line, label) per group.
        n_legend_rows: rows the legend takes.
        height: figure height in inches.
        path: PNG file to write.
        top_inches: space above the panels for the title, in inches (0.2 more when flagged).
        margins: further ``subplots_adjust`` arguments (left, right, hspace, wspace).
    """
    if not cmp.comparable:
        title = f"NOT COMPARABLE: scenarios differ in {', '.join(cmp.scenario_keys)}\n{title}"
    fig.suptitle(title, fontsize=11)
    fig.legend(*zip(*handles), loc="lower center", ncol=min(len(handles), 2), fontsize=8, frameon=False)
    bottom = (0.55 + 0.22 * n_legend_rows) / height
    top = 1 - (top_inches + (0 if cmp.comparable else 0.2)) / height
    fig.subplots_adjust(bottom=bottom, top=top, **margins)
    fig.savefig(path, dpi=100)
    return Path(path)
