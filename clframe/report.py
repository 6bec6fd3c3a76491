"""Human-readable results: one run's accuracy matrix, and a comparison of many runs (see clframe.compare)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def format_run(summary: dict[str, Any]) -> str:
    """The accuracy matrix, average accuracy, forgetting and BWT of one run, as text."""
    R = summary["acc_matrix"]
    n = len(R[0]) if R else 0
    lines = [
        f"{summary['experiment_name']} | strategies: {'+'.join(summary['strategies']) or 'naive'} | "
        f"seed {summary['seed']} | {summary['steps']} steps, {summary['wall_time_s']:.1f} s",
        "accuracy matrix (row i: after training experience i; column j: evaluated on experience j)",
        "          " + "".join(f"{'exp ' + str(j):>8}" for j in range(n)),
    ]
    lines += [f"after {i:<4}" + "".join(f"{a:8.3f}" for a in row) for i, row in enumerate(R)]
    lines.append(
        f"final_avg_acc {summary['final_avg_acc']:.3f}   avg_forgetting {summary['avg_forgetting']:.3f}   "
        f"bwt {summary['bwt']:.3f}"
    )
    if "run_dir" in summary:
        lines.append(f"results: {summary['run_dir']}")
    return "\n".join(lines)


def load_summaries(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Every ``summary.json`` under the given run or sweep directories."""
    out = []
    for p in map(Path, paths):
        files = [p] if p.name == "summary.json" else sorted(p.rglob("summary.json"))
        out += [json.loads(f.read_text()) | {"run_dir": str(f.parent)} for f in files]
    return out


def format_comparison(summaries: list[dict[str, Any]], metrics: list[str] | None = None) -> str:
    """The ``clframe compare`` table of these summaries (grouped by config difference, mean ± std over seeds)
    as plain text; ``clframe.compare.compare`` also prints warnings and writes the csv and plot."""
    from clframe.compare import group_runs, resolve_metrics, runs_from_summaries
    from clframe.compare_table import table_text

    runs = runs_from_summaries(summaries)
    return table_text(group_runs(runs), resolve_metrics(runs, metrics))
