"""``clframe compare``: group runs by how their configs differ, average over seeds, tabulate and plot.

Runs are the directories holding a ``summary.json`` (with its ``config.yaml`` and ``metrics.csv``).
Their resolved configs are flattened to dotted keys; the keys whose values differ across runs (leaving
out the seed and what is derived from it, paths and display-only settings) define the groups, and a
group's label is those values (``strategies=replay, strategies.replay.mem_size=100``). Runs that differ
in their scenario or experiment name are still tabulated, but flagged as not comparable. Besides the
table, ``comparison.csv`` and ``comparison.png`` (accuracy curves), every monitor draws its own
comparison figure when the runs recorded what it needs (``Monitor.compare``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from clframe.compare.runs import (
    CSV_NAME,
    PNG_NAME,
    Comparison,
    Group,
    Run,
    differing_keys,
    group_runs,
    load_runs,
    metric_value,
    not_comparable_message,
    resolve_metrics,
)
from clframe.errors import ConfigError

__all__ = ["Comparison", "Group", "Run", "compare", "compare_options", "differing_keys", "group_runs", "load_runs",
           "metric_value", "resolve_metrics"]


def compare_options() -> dict[str, dict[str, Any]]:
    """Every registered monitor's comparison options: ``{monitor: {option: CompareOption}}``."""
    from clframe.config.registry import MONITORS

    return {name: dict(cls.compare_options) for name in MONITORS.names()
            if (cls := MONITORS.get(name)).compare_options}


def default_out(paths: Sequence[str | Path]) -> Path:
    """Where comparison.csv/png go by default: the first given directory (a summary.json's directory)."""
    for p in map(Path, paths):
        if p.is_dir():
            return p
        if p.is_file():
            return p.parent
    return Path(".")


def compare(paths: Sequence[str | Path], metrics: Iterable[str] | None = None, out: str | Path | None = None,
            write: bool = True, options: dict[str, dict[str, Any]] | None = None, wandb: bool = False) -> Comparison:
    """``clframe compare``: load, group, print the table (and any comparability warning), write the files.

    Args:
        paths: run directories, sweep directories or summary.json files (searched recursively).
        metrics: summary keys to show (repeatable and/or comma-separated; dotted names reach into nested dicts,
            e.g. ``online.online_acc``); default ``DEFAULT_METRICS`` and those of ``OPTIONAL_METRICS`` the
            summaries have.
        out: directory for comparison.csv, comparison.png and the monitors' figures (e.g.
            plasticity_comparison.png, curriculum_comparison.png, online_comparison.png) (default:
            ``default_out(paths)``).
        write: whether to write those files.
        options: per monitor, the values of its ``compare_options`` (default: their defaults).
        wandb: also log the table and the figures as one wandb run (job type ``compare``) in the runs'
            project and group, its files in ``<out>/wandb`` (``clframe.compare.wandb_run``) (default False).

    Raises:
        ConfigError: nothing found, or an unknown metric.
    """
    from clframe.compare.console import make_console, warning
    from clframe.compare.curves import plot_comparison
    from clframe.compare.table import print_table, write_csv
    from clframe.config.registry import MONITORS

    runs = load_runs(paths)
    if not runs:
        raise ConfigError(f"no summary.json found under {', '.join(map(str, paths))}")
    names = resolve_metrics(runs, metrics)
    cmp = group_runs(runs)
    if not cmp.comparable:
        warning(not_comparable_message(cmp))
    console = make_console()
    print_table(cmp, names, console)
    if write:
        out_dir = Path(out) if out is not None else default_out(paths)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [write_csv(cmp, names, out_dir / CSV_NAME)]
        png = plot_comparison(cmp, out_dir / PNG_NAME)
        written += [png] if png else []
        for name in MONITORS.names():
            written += MONITORS.get(name).compare(cmp, out_dir, **(options or {}).get(name, {}))
        note = "" if png else " (no metrics.csv found: no plot)"
        console.print(f"wrote {', '.join(map(str, written))}{note}", markup=False, highlight=False, soft_wrap=True)
        if wandb:
            from clframe.compare.wandb_run import log_comparison

            run_id = log_comparison(cmp, names, [p for p in written if p.suffix == ".png"], out_dir)
            console.print(f"wandb: comparison run {run_id} in {out_dir / 'wandb'}", markup=False, highlight=False,
                          soft_wrap=True)
    sys.stdout.flush()
    return cmp
