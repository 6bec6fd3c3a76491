"""The comparison figure: mean accuracy curve per group of runs, with a band over seeds."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clframe.compare.runs import Comparison, Group

def read_curve(path: Path, column: str = "acc") -> tuple[list[int], list[float], str] | None:
    """Per evaluation step, ``column`` averaged over the experiences evaluated at that step.

    Uses the rows with ``kind == "continual"`` when metrics.csv has that column and such rows, otherwise
    every row; repeated evaluations of one experience at one step are averaged first.
    """
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    source = "all"
    if rows and "kind" in rows[0]:
        continual = [r for r in rows if r.get("kind") == "continual"]
        if continual:
            rows, source = continual, "continual"
    per_step: dict[int, dict[str, list[float]]] = {}
    for r in rows:
        try:
            step, value = int(float(r["step"])), float(r[column])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(value):
            per_step.setdefault(step, {}).setdefault(str(r.get("eval_experience")), []).append(value)
    if not per_step:
        return None
    steps = sorted(per_step)
    values = [statistics.fmean(statistics.fmean(v) for v in per_step[s].values()) for s in steps]
    return steps, values, source


# -- grouping ------------------------------------------------------------------------------------

def group_curve(group: Group) -> tuple[list[int], list[float], list[float], set[str]] | None:
    """(steps, mean over the group's runs, sample std (0 with one run), curve sources) — None without curves."""
    curves = [c for r in group.runs if (c := r.curve())]
    if not curves:
        return None
    at: dict[int, list[float]] = {}
    for steps, values, _ in curves:
        for s, v in zip(steps, values):
            at.setdefault(s, []).append(v)
    steps = sorted(at)
    mean = [statistics.fmean(at[s]) for s in steps]
    std = [statistics.stdev(at[s]) if len(at[s]) > 1 else 0.0 for s in steps]
    return steps, mean, std, {c[2] for c in curves}


def plot_comparison(cmp: Comparison, path: Path) -> Path | None:
    """Overlaid accuracy curves, mean over seeds with a ± std band per group; None if no run has metrics.csv."""
    curves = [(g, c) for g in cmp.groups if (c := group_curve(g))]
    if not curves:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if len(curves) > 10:  # the default cycle repeats after 10 colours: a baseline table has more groups
        from matplotlib import colormaps

        ax.set_prop_cycle(color=[colormaps["tab20"](i % 20) for i in range(len(curves))])
    for g, (steps, mean, std, _) in curves:
        (line,) = ax.plot(steps, mean, lw=1.4, label=f"{g.label} (n={len(g.runs)})")
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=line.get_color(), alpha=0.2, lw=0)
    sources = set().union(*(c[3] for _, c in curves))
    evals = {"continual": "continual evaluation", "all": "all evaluations"}
    source = " / ".join(evals[s] for s in sorted(sources))
    title = f"Average accuracy over the experiences evaluated at each step ({source})\nmean ± std over seeds"
    if not cmp.comparable:
        title = f"NOT COMPARABLE: scenarios differ in {', '.join(cmp.scenario_keys)}\n{title}"
    ax.set(xlabel="training step", ylabel="accuracy (mean over evaluated experiences)", title=title)
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.09, top=0.86)  # fixed margins: one draw, not a layout pass
    fig.savefig(path, dpi=120)
    return Path(path)
