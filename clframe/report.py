"""Human-readable results: one run's accuracy matrix, and a comparison of many runs."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
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


def format_comparison(summaries: list[dict[str, Any]]) -> str:
    """Mean and standard deviation over seeds, one row per (experiment, strategies)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for s in summaries:
        groups[(s["experiment_name"], "+".join(s["strategies"]) or "naive")].append(s)

    def cell(vals: list[float]) -> str:
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        digits = 0 if abs(statistics.mean(vals)) >= 100 else 3
        return f"{statistics.mean(vals):.{digits}f} ± {sd:.{digits}f}"

    keys = ["final_avg_acc", "avg_forgetting", "bwt", "train_samples_per_s"]
    header = f"{'experiment':<20}{'strategies':<16}{'seeds':>6}" + "".join(f"{k:>22}" for k in keys)
    rows = [header, "-" * len(header)]
    for (exp, strat), runs in sorted(groups.items()):
        rows.append(f"{exp:<20}{strat:<16}{len(runs):>6}" + "".join(f"{cell([r[k] for r in runs]):>22}" for k in keys))
    return "\n".join(rows)
