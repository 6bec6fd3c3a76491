"""The online (prequential) comparison figure: per window of steps, per group of runs, over seeds.

Reads what ``monitors.online.enabled=true`` leaves in each run directory: ``online.csv`` (one row per window: ``step``,
``experience``, ``n``, the online metrics and the head's diagnostics such as the Kalman head's ``gamma``).
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clframe.compare.bands import Band, finish_figure

if TYPE_CHECKING:
    from clframe.compare.runs import Comparison, Group, Run

ONLINE_CSV = "online.csv"
PNG = "online_comparison.png"
# metric column -> panel title; the first two share the first panel (classification / regression)
METRIC_PANELS = {
    "online_acc": "online accuracy",
    "online_error": "online squared error",
    "online_loglik": "online log-likelihood",
    "ece": "windowed ECE",
}
ACC_KEYS = ("online_acc", "online_error")
NON_DIAGNOSTIC = frozenset({"step", "experience", "n", *METRIC_PANELS})  # every other column: a head diagnostic


def read_online(run: Run) -> dict[str, np.ndarray] | None:
    """The run's online.csv as float columns (empty or non-numeric cells are NaN); None without rows."""
    path = run.dir / ONLINE_CSV
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "step" not in rows[0]:
        return None

    def num(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan

    return {k: np.array([num(r.get(k)) for r in rows]) for k in rows[0]}


def moving_average(x: np.ndarray, k: int = 1) -> np.ndarray:
    """Trailing mean over the last ``k`` values (fewer at the start), ignoring NaNs; ``k <= 1``: ``x`` itself."""
    if k <= 1:
        return x
    ok = np.isfinite(x)
    csum = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    ccnt = np.concatenate([[0], np.cumsum(ok)])
    hi = np.arange(1, len(x) + 1)
    lo = np.maximum(hi - k, 0)
    count = ccnt[hi] - ccnt[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (csum[hi] - csum[lo]) / count, np.nan)


def experience_ends(columns: dict[str, np.ndarray]) -> list[int]:
    """Approximate experience ends: the step of the last window of each experience the ``experience`` column
    leaves (windows are not closed at experience ends, so the true end lies within the next window)."""
    exp, steps = columns.get("experience"), columns["step"]
    if exp is None:
        return []
    return [int(steps[i - 1]) for i in range(1, len(exp)) if exp[i] != exp[i - 1]]


@dataclass
class OnlineSeries:
    """What the figure draws for one group: window steps [W], a ``Band`` per column, experience ends, runs."""

    steps: np.ndarray
    bands: dict[str, Band]
    ends: list[int]
    n_runs: int


def group_online(group: Group, smooth: int = 1) -> OnlineSeries | None:
    """The group's online metrics and head diagnostics: mean, min and max over its runs with online.csv at
    each window (runs longer than the shortest are truncated to it).

    Args:
        group: the runs of one configuration (seeds aside).
        smooth: windows of the trailing moving average applied to each run's ``METRIC_PANELS`` columns before
            averaging over runs (default 1: none); diagnostics are not smoothed.

    Returns:
        None when no run of the group has an online.csv with values.
    """
    tables = [t for r in group.runs if (t := read_online(r))]
    if not tables:
        return None
    w = min(len(t["step"]) for t in tables)
    keys = list(dict.fromkeys(k for t in tables for k in t if k not in ("step", "experience", "n")))
    bands = {}
    for key in keys:
        per_run = [t[key][:w] for t in tables if key in t]
        if key in METRIC_PANELS:
            per_run = [moving_average(x, smooth) for x in per_run]
        table = np.stack(per_run)  # [runs, W]
        if not np.isfinite(table).any():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a window no run recorded: NaN, not a warning
            bands[key] = Band(np.nanmean(table, 0), np.nanmin(table, 0), np.nanmax(table, 0))
    if not bands:
        return None
    return OnlineSeries(tables[0]["step"][:w], bands, experience_ends(tables[0]), len(tables))


def plot_online_comparison(cmp: Comparison, path: Path, smooth: int = 1) -> Path | None:
    """Panels stacked over the training step, one colour per group (mean over seeds, min–max band): online
    accuracy (or squared error for regression), online log-likelihood, windowed ECE (when recorded), then one
    panel per head diagnostic any run records (a group without it has no line there); experience ends of each
    group's first run dashed.

    Args:
        cmp: the grouped runs.
        path: the PNG to write.
        smooth: trailing moving average, in windows, of the metric panels (default 1: none).

    Returns:
        ``path``, or None (nothing written) when no run has an online.csv.
    """
    drawn = [(g, s) for g in cmp.groups if (s := group_online(g, smooth))]
    if not drawn:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    present = list(dict.fromkeys(k for _, s in drawn for k in s.bands))
    acc_keys = [k for k in ACC_KEYS if k in present]
    panels: list[tuple[list[str], str]] = []  # (columns drawn, the first a group has; title)
    panels += [(acc_keys, " / ".join(METRIC_PANELS[k] for k in acc_keys))] if acc_keys else []
    panels += [([k], METRIC_PANELS[k]) for k in ("online_loglik", "ece") if k in present]
    panels += [([k], k) for k in present if k not in NON_DIAGNOSTIC]

    n_legend_rows = (len(drawn) + 1) // 2
    height = 1.9 * len(panels) + 1.0 + 0.22 * n_legend_rows
    fig = Figure(figsize=(11, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    handles = []
    for g, s in drawn:
        color, first = None, None
        for ax, (keys, _) in zip(axes, panels):
            band = next((s.bands[k] for k in keys if k in s.bands), None)
            if band is None:
                continue
            (line,) = ax.plot(s.steps, band.mean, lw=1.3, color=color, marker="." if len(s.steps) < 50 else None)
            color, first = line.get_color(), first or line
            ax.fill_between(s.steps, band.lo, band.hi, color=color, alpha=0.2, lw=0)
        handles.append((first, f"{g.label} (n={s.n_runs})"))
    ends = sorted({b for _, s in drawn for b in s.ends})
    for ax, (_, title) in zip(axes, panels):
        for b in ends:
            ax.axvline(b, color="grey", ls="--", lw=0.7, alpha=0.5)
        ax.set_ylabel(title, fontsize=9)
        ax.grid(alpha=0.3)
    if acc_keys == ["online_acc"]:
        axes[0].set_ylim(-0.02, 1.02)
    axes[-1].set_xlabel("training step")
    title = "Online (prequential) metrics per window: mean over seeds, band min–max"
    title += f", moving average over {smooth} windows" if smooth > 1 else ""
    title += "; dashed: experience ends" if ends else ""
    return finish_figure(fig, cmp, title, handles, n_legend_rows, height, path, top_inches=0.5,
                         left=0.09, right=0.98, hspace=0.12)
