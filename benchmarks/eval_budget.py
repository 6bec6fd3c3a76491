"""Continual evaluation within a time budget (``eval.budget``): a small CNN on split MNIST t10k, the
training time with the continual evaluator against without it, in one process.

The run of ``benchmarks/cnn_mnist.py`` (its ``SmallCNN``, batch 32, SGD 0.01, MNIST t10k's 8000 training
images in 5 class-incremental experiences, ``--epochs`` passes each, one thread) with replay (memory 500),
so that past experiences recover after a switch and the stability gap can show. Three configurations
take turns (``--repeats`` interleaved repetitions after one warm-up run each):

- off: ``monitors.continual.enabled=false``; the accuracy matrix only;
- budget: ``eval.budget=0.2`` (``--budget``); ``monitors.continual.every=10`` is the smallest period;
- every 10: the default fixed period, for comparison.

The figure: (training steps + continual evaluation) / training steps with evaluation off, the medians
over repetitions of the ratio within each repetition. A run's steps are its ``train_time_s``; its
continual evaluation is its ``eval_time_s`` less the off run's (the accuracy matrix, the same work in
both); checkpoints are in neither. Also: the ratio the budgeted evaluator measured itself
(``continual_budget``: its evaluations' seconds over the steps'), its number of evaluations, and
min-ACC against the final accuracy on past experiences (the last accuracy-matrix row but its last entry).

    python benchmarks/eval_budget.py [--epochs 2] [--repeats 5] [--budget 0.2] [--short] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so the run can import cnn_mnist:SmallCNN

from cnn_mnist import clframe_run  # noqa: E402
from figures import Figure, add_args, report  # noqa: E402

TARGET = 1.25
REPLAY = ["strategy=replay", "strategies.replay.mem_size=500", "monitors.continual.every=10"]


def configs(budget: float) -> dict[str, list[str]]:
    """The overrides of each configuration."""
    return {"off": [*REPLAY, "monitors.continual.enabled=false"],
            "budget": [*REPLAY, "monitors.continual.enabled=true", f"eval.budget={budget}"],
            "every 10": [*REPLAY, "monitors.continual.enabled=true"]}


def evaluations(summary: dict[str, Any]) -> int:
    """The continual evaluations of a run (the distinct steps of its ``continual`` rows in metrics.csv)."""
    with open(Path(summary["run_dir"]) / "metrics.csv") as f:
        return len({r["step"] for r in csv.DictReader(f) if r["kind"] == "continual"})


def past_final(summary: dict[str, Any]) -> float:
    """Mean final accuracy on the past experiences (the last matrix row without its last entry)."""
    row = summary["acc_matrix"][-1][:-1]
    return sum(row) / len(row)


def ratio(run: dict[str, Any], off: dict[str, Any]) -> float:
    """(steps + continual evaluation) / steps with evaluation off, within one repetition."""
    continual = max(run["eval_time_s"] - off["eval_time_s"], 0.0)
    return (run["train_time_s"] + continual) / off["train_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="passes over each experience (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions; medians (default 5)")
    parser.add_argument("--budget", type=float, default=0.2, help="eval.budget (default 0.2)")
    add_args(parser)
    args = parser.parse_args()
    if args.short:
        args.repeats = 3
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from clframe.data.datasets import load_dataset
    from clframe.run.build import quiet

    quiet()
    try:
        load_dataset("mnist_t10k")
    except FileNotFoundError as e:
        print(f"skipped: {e}")
        return
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in configs(args.budget)}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats + 1):  # the first round warms up (imports, allocator) and is dropped
            for name, overrides in configs(args.budget).items():
                summary = clframe_run(args.epochs, Path(tmp), overrides)
                summary["evaluations"] = evaluations(summary)
                if rep:
                    runs[name].append(summary)
    off, budget, fixed = runs["off"], runs["budget"], runs["every 10"]
    med = statistics.median
    budget_ratios = [ratio(b, o) for b, o in zip(budget, off)]
    r_budget, r_fixed = med(budget_ratios), med(ratio(f, o) for f, o in zip(fixed, off))
    fit = {k: med(r["fit_time_s"] / o["fit_time_s"] for r, o in zip(runs[k], off)) for k in ("budget", "every 10")}
    own = med(1 + b["continual_budget"]["eval_s"] / b["continual_budget"]["steps_s"] for b in budget)
    min_acc = med(b["min_acc"] for b in budget)
    final = med(past_final(b) for b in budget)
    gap = {k: med(r["stability_gap_depth"] or 0.0 for r in runs[k]) for k in ("budget", "every 10")}
    detail = (
        f"{len(off)} interleaved repetitions, {args.epochs} epochs per experience, {off[0]['steps']} steps, 1 thread. "
        f"Medians: steps with evaluation off {med(o['train_time_s'] for o in off):.2f} s, accuracy matrix "
        f"{med(o['eval_time_s'] for o in off):.2f} s. (Steps + evaluation) / steps off: budget {args.budget} "
        f"{r_budget:.2f}x ({min(budget_ratios):.2f}-{max(budget_ratios):.2f}x; its own measure {own:.2f}x; its steps "
        f"alone {med(b['train_time_s'] / o['train_time_s'] for b, o in zip(budget, off)):.2f}x), "
        f"{med(b['evaluations'] for b in budget):.0f} evaluations, last period "
        f"{med(b['continual_budget']['last_period'] for b in budget):.0f} steps; every 10 {r_fixed:.2f}x, "
        f"{med(f['evaluations'] for f in fixed):.0f} evaluations. Whole fit (matrix and checkpoints too) / off: "
        f"budget {fit['budget']:.2f}x, every 10 {fit['every 10']:.2f}x. Budget run: min-ACC {min_acc:.3f}, final "
        f"accuracy on past experiences {final:.3f}, stability-gap depth {gap['budget']:.3f}; every 10: min-ACC "
        f"{med(f['min_acc'] for f in fixed):.3f}, depth {gap['every 10']:.3f}.")
    figures = [
        Figure(f"CNN MNIST t10k, budget {args.budget}: (steps + eval) / steps, eval off", r_budget, TARGET,
               higher_is_better=False, detail=detail),
        Figure("budget run: min-ACC / final acc. on past experiences", min_acc / final, 0.999,
               higher_is_better=False, detail=detail),
    ]
    print(detail)
    report(figures, args.json)


if __name__ == "__main__":
    main()
