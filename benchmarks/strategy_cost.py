"""The cost of each baseline strategy's training step as a ratio to naive's, in one process.

    python benchmarks/strategy_cost.py [--steps 20] [--repeats 15] [--strategies lwf si ...] [--short] [--json PATH]

The work is ``penalty_step.py``'s: MLP 784-256-256-10, batch 64, SGD, one thread (torch's and NumPy's
BLAS), random data in two class-incremental experiences (classes 0-4, then 5-9); each strategy (its
registry defaults) trains experience 0, which ends there (importances, anchors, old models and buffers
are in place), then is timed on experience-1 steps: blocks of
``--steps`` calls of ``CLModule.training_step`` (forward, the strategy's terms and hooks, backward, the
optimizer step; no evaluation, no logging), the strategies taking turns block by block. Each figure is
the median seconds per step of the strategy over naive's, against a ceiling of 2 (issue 21); ``gem``
(a QP per step) and ``gdumb`` (it retrains at evaluation, not in the step) are reported without one.
Strategies that are not registered in this checkout are listed and skipped.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from figures import Figure, add_args, interleaved, report
from penalty_step import BATCH, prepared, random_data, timer
from threadpoolctl import threadpool_limits

from clframe.config.registry import STRATEGIES
from clframe.run.runner import quiet

# cumulative is left out: its step is naive's (the union comes from the scenario, scenario.cumulative=true)
BASELINES = ("ewc", "replay", "lwf", "si", "mas", "agem", "gem", "der", "derpp", "er_ace", "icarl", "gdumb", "bic",
             "joint")
NO_TARGET = ("gem", "gdumb")
TARGET = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed block (default 20)")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved blocks per strategy (default 15)")
    parser.add_argument("--strategies", nargs="+", default=list(BASELINES), help="compared with naive")
    add_args(parser)
    args = parser.parse_args()
    if args.short:
        args.steps, args.repeats = min(args.steps, 20), min(args.repeats, 5)
    torch.set_num_threads(1)
    # NumPy's BLAS too: GEM's QP otherwise runs on every core, and its idle threads spin on into the next
    # strategy's block, which this process's CPU time then charges to that strategy (DER's 2.2x read 4.3x)
    threadpool_limits(1)
    quiet()
    warnings.simplefilter("ignore")
    known = set(STRATEGIES.names())
    missing = [s for s in args.strategies if s not in known]
    names = [s for s in args.strategies if s in known]
    data = [random_data(640, seed=0, classes=range(5)), random_data(640, seed=1, classes=range(5, 10))]
    runs = {}
    for name in ["naive", *names]:
        module, todo = prepared(name, data, penalty=False)
        runs[name] = timer(module, todo, args.steps)
    sec = interleaved(runs, args.repeats)
    print(f"MLP 784-256-256-10, batch {BATCH}, 1 thread, torch {torch.__version__}: median seconds per "
          f"training step over {args.repeats} interleaved blocks of {args.steps} steps, in experience 1")
    if missing:
        print(f"  not registered here, skipped: {', '.join(missing)}")
    figures, detail = [], f"median of {args.repeats} interleaved blocks of {args.steps} steps, 1 thread"
    for name in names:
        ratio = sec[name] / sec["naive"]
        print(f"  {name:<12} {sec[name] * 1e3:7.3f} ms/step   naive {sec['naive'] * 1e3:7.3f} ms   {ratio:5.2f}x")
        if name not in NO_TARGET:
            figures.append(Figure(f"MLP b64 step, {name} / naive", ratio, TARGET, higher_is_better=False,
                                  detail=detail))
    report(figures, args.json)


if __name__ == "__main__":
    main()
