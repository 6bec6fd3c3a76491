"""Human-readable results of one run: the accuracy matrix and its summary metrics (comparisons: clframe.compare)."""

from __future__ import annotations

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
