"""The cost of a penalty strategy's training step: ``CLModule.training_step`` with ``ewc`` (and
``spectral``, ``l2_init``, ``wasserstein_init``) against the same step with ``naive``, in one process.

    python benchmarks/penalty_step.py [--steps 20] [--repeats 15] [--strategies ewc ...] [--short] [--json PATH]

The work: MLP 784-256-256-10, batch 64, SGD, one thread, random data in two experiences. Each
strategy gets its own ``CLModule`` (built with its registry defaults), set up as ``fit_fabric`` sets it
up; it trains the batches of experience 0, then one batch of experience 1, which ends experience 0
(EWC computes its Fisher and anchors there). What is timed: blocks of ``--steps`` calls of
``training_step`` on experience-1 batches, so every penalty is active in every timed step (forward,
penalty, backward, SGD step; no evaluation, no Fisher, no logging). The time is this process's CPU
time (``time.process_time``), so that other processes on a shared machine count less. The strategies
take turns block by block (``figures.interleaved``, after a warm-up block each); each figure is
``(a)/(b)``, the median seconds per step of (a) the strategy over (b) naive, against a ceiling of 1.3.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import torch
from figures import Figure, add_args, interleaved, report
from throughput import _Backbone, _Head

from clframe.config.registry import STRATEGIES
from clframe.core.module import CLModule
from clframe.data.batch import Batch
from clframe.data.stream import Experience, Stream, TensorData
from clframe.models.model import Model
from clframe.run.runner import quiet

BATCH, LR, TARGET = 64, 0.01, 1.3
STRATEGY_NAMES = ("naive", "ewc", "spectral", "l2_init", "wasserstein_init")


def random_data(n: int, seed: int, classes: range = range(10)) -> TensorData:
    """``n`` random 784-dim samples with labels drawn from ``classes`` (default all 10)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes)[torch.randint(0, len(classes), (n,), generator=g)]
    return TensorData(torch.rand(n, 784, generator=g), y, torch.zeros_like(y))


def batches(d: TensorData, exp: int) -> list[Batch]:
    """``d`` in order, in batches of ``BATCH``, each with its positions in ``d`` (as the iterator's)."""
    return [Batch(d.x[i : i + BATCH], d.y[i : i + BATCH], d.t[i : i + BATCH], exp,
                  index=torch.arange(i, min(i + BATCH, len(d)))) for i in range(0, len(d), BATCH)]


def prepared(name: str, data: list[TensorData], penalty: bool = True) -> tuple[CLModule, list[Batch]]:
    """A module with strategy ``name`` that has ended experience 0 and taken one step of experience 1,
    and the experience-1 batches to time it on (``penalty``: check that a loss term of the strategy is
    active in experience 1; default True)."""
    from lightning.fabric import Fabric

    stream = Stream([Experience(i, d, TensorData(d.x[:10], d.y[:10], d.t[:10]), sorted(set(d.y.tolist())))
                     for i, d in enumerate(data)])
    steps = [len(batches(d, i)) for i, d in enumerate(data)]
    module = CLModule(Model(_Backbone(), _Head()), {name: STRATEGIES.build(name, {})}, stream, steps, lr=LR,
                      log_every=10**9)
    fabric = Fabric(accelerator="cpu", devices=1)
    fabric.setup(module, module.configure_optimizers())
    module.backward_loss = fabric.backward
    module.on_fit_start()
    for i, b in enumerate(batches(data[0], 0) + batches(data[1], 1)[:1]):
        module.training_step(b, i)
    if penalty and name != "naive" and set(module._loss_steps[-1][2]) == {"task"}:
        raise RuntimeError(f"{name}: its penalty is not active in experience 1")
    return module, batches(data[1], 1)


def timer(module: CLModule, todo: list[Batch], steps: int) -> Callable[[], float]:
    """CPU seconds per step over ``steps`` training steps on ``todo`` (cycled)."""

    def run() -> float:
        start = time.process_time()
        for i in range(steps):
            module.training_step(todo[i % len(todo)], i)
        module._loss_steps.clear()  # the logged terms stay on the device; drop them between blocks
        return (time.process_time() - start) / steps

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed block (default 20)")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved blocks per strategy (default 15)")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGY_NAMES[1:]), help="compared with naive")
    add_args(parser)
    args = parser.parse_args()
    if args.short:
        args.steps, args.repeats = min(args.steps, 20), min(args.repeats, 7)
    torch.set_num_threads(1)
    quiet()
    warnings.simplefilter("ignore")
    data = [random_data(640, seed=0), random_data(640, seed=1)]
    runs = {}
    for name in ["naive", *args.strategies]:
        module, todo = prepared(name, data)
        runs[name] = timer(module, todo, args.steps)
    sec = interleaved(runs, args.repeats)
    print(f"MLP 784-256-256-10, batch {BATCH}, 1 thread, torch {torch.__version__}: median seconds per "
          f"training step over {args.repeats} interleaved blocks of {args.steps} steps, penalties active")
    figures = []
    for name in args.strategies:
        ratio = sec[name] / sec["naive"]
        print(f"  {name:<18} {1 / sec[name]:6.0f} steps/s ({sec[name] * 1e3:.3f} ms)   naive {1 / sec['naive']:6.0f} "
              f"steps/s ({sec['naive'] * 1e3:.3f} ms)   (a)/(b) {ratio:.2f}x")
        figures.append(Figure(f"MLP b64 step, {name} / naive", ratio, TARGET, higher_is_better=False,
                              detail=f"median of {args.repeats} interleaved blocks of {args.steps} steps, 1 thread"))
    report(figures, args.json)


if __name__ == "__main__":
    main()
