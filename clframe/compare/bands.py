"""What the comparison figures of the monitors share: a series per group as mean and min-max band
over its runs, JSON values as numbers, and the figure's title, legend and margins."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from clframe.compare.runs import Comparison


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


def num(v: Any) -> float:
    """A JSON value as a float; NaN for null, text or booleans."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def band(per_run: list[list[float]]) -> Band:
    """Mean, min and max over runs at each task; a run shorter than the longest counts where it has values."""
    table = np.full((len(per_run), max(map(len, per_run))), np.nan)  # [runs, T]
    for i, values in enumerate(per_run):
        table[i, : len(values)] = values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a task no run recorded: NaN, not a warning
        return Band(np.nanmean(table, 0), np.nanmin(table, 0), np.nanmax(table, 0))


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
