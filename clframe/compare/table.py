"""The comparison table: mean ± std per group with rich, and the same as CSV."""

from __future__ import annotations

import csv
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clframe.compare.console import make_console
from clframe.compare.runs import Comparison, Group, metric_value


@dataclass
class Stat:
    n: int
    mean: float | None
    std: float | None  # sample standard deviation (n - 1); None for fewer than two values


def stat(group: Group, metric: str) -> Stat:
    vals = [v for r in group.runs if (v := metric_value(r.summary, metric)) is not None]
    return Stat(len(vals), statistics.fmean(vals) if vals else None, statistics.stdev(vals) if len(vals) > 1 else None)


def format_stat(s: Stat, n_runs: int) -> str:
    if s.mean is None:
        return "—"
    digits = 0 if abs(s.mean) >= 100 else 3
    text = f"{s.mean:.{digits}f}" + ("" if s.std is None else f" ± {s.std:.{digits}f}")
    return text + (f" (n={s.n})" if s.n < n_runs else "")


# -- output --------------------------------------------------------------------------------------

def comparison_table(cmp: Comparison, metrics: Sequence[str], fit_width: int | None = None) -> Any:
    """A ``rich`` table: one row per group, the number of seeds, mean ± std of every metric.

    With ``fit_width`` (a narrow terminal), each ``key=value`` of a group label and each cell's "± std" go
    on a line of their own, and the label column gets the width the numbers leave.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    exps = cmp.experiments
    title = (f"experiment {exps[0]}" if len(exps) == 1 else f"experiments {', '.join(exps)}") + \
        f": {len(cmp.runs)} runs in {len(cmp.groups)} group{'s' * (len(cmp.groups) != 1)}"
    caption = "mean ± std over seeds (sample std)"
    caption += f"; grouped by {', '.join(cmp.keys)}" if cmp.keys else "; the runs differ only by seed"
    if not cmp.comparable:
        title = f"NOT COMPARABLE (scenarios differ in {', '.join(cmp.scenario_keys)}) — {title}"
    table = Table(title=Text(title), caption=Text(caption), box=box.SIMPLE_HEAD,
                  title_style="bold" if cmp.comparable else "bold red")
    labels = [g.label for g in cmp.groups]
    cells = [[format_stat(stat(g, m), len(g.runs)) for m in metrics] for g in cmp.groups]
    widths: list[int | None] = [None] * (len(metrics) + 2)
    if fit_width:
        labels = [label.replace(", ", ",\n") for label in labels]
        cells = [[c.replace(" ± ", "\n± ").replace(" (n=", "\n(n=") for c in row] for row in cells]
        widths[2:] = [max(5, *(len(line) for row in cells for line in row[i].splitlines()))
                      for i in range(len(metrics))]
        widths[1] = 5
        longest = max(len(line) for label in labels for line in label.splitlines())
        widths[0] = max(12, min(longest, fit_width - sum(w + 3 for w in widths[1:]) - 4))
    table.add_column("group", overflow="fold", width=widths[0])
    table.add_column("seeds", justify="right", width=widths[1], overflow="fold")
    for m, w in zip(metrics, widths[2:]):
        table.add_column(m, justify="right", overflow="fold", width=w)
    for label, g, row in zip(labels, cmp.groups, cells):
        table.add_row(Text(label), str(len(g.runs)), *map(Text, row))
    return table


def _natural_width(console: Any, renderable: Any) -> int:
    return console.measure(renderable, options=console.options.update_width(10_000)).maximum


def print_table(cmp: Comparison, metrics: Sequence[str], console: Any = None) -> None:
    """Print the comparison table: in a terminal, fitted to its width (labels stacked if need be);
    otherwise (a pipe, a file) as wide as the content, one line per group."""
    console = console or make_console()
    table = comparison_table(cmp, metrics)
    if not console.is_terminal:
        console.width = max(80, _natural_width(console, table))
    elif _natural_width(console, table) > console.width:
        table = comparison_table(cmp, metrics, fit_width=console.width)
    console.print(table)


def write_csv(cmp: Comparison, metrics: Sequence[str], path: Path) -> Path:
    """One row per group: group label, n_seeds, then ``<metric>_mean`` and ``<metric>_std`` per metric."""
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["group", "n_seeds", *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
        for g in cmp.groups:
            cells: list[Any] = []
            for m in metrics:
                s = stat(g, m)
                cells += ["" if s.mean is None else repr(s.mean), "" if s.std is None else repr(s.std)]
            w.writerow([g.label, len(g.runs), *cells])
    return Path(path)
