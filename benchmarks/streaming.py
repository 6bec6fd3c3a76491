"""Streaming at batch size 1: clframe vs a plain PyTorch loop, in one process, one thread.

    python benchmarks/streaming.py [--steps 3000] [--repeats 3] [--short] [--json PATH]

The work: input-permuted digits (inputs in [-1, 1]), MLP 64-64-64-64-10 with ReLU, batch size 1.
Prints steps/s and the ratios (medians of interleaved repetitions, after one warm-up run each):
- SGD: clframe under its default engine (``trainer.engine=auto``: Fabric for one process) and under
  Trainer.fit vs a plain loop with torch.optim.SGD (target >= 0.5x for the default engine);
- UPGD: clframe with the ``upgd`` strategy (default engine) vs a plain loop with the reference UPGD
  formulation written one parameter at a time (benchmarks/upgd_step.py's LoopUPGD) (target >= 0.8x).
``--short``: 1000 steps, 5 repetitions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clframe.config import compose
from clframe.run.runner import build, fit, quiet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure, add_args, interleaved, report  # noqa: E402
from upgd_step import LoopUPGD  # noqa: E402

UPGD_SETTINGS = {"lr": 0.06, "sigma": 0.01, "weight_decay": 0.003, "beta_utility": 0.999}


def overrides(steps: int, engine: str, strategy: str) -> list[str]:
    return ["scenario=input_permuted", "scenario.n_tasks=2", f"scenario.samples_per_task={steps // 2}",
            "backbone.hidden=[64,64,64]", "train.batch_size=1", "train.lr=0.03", f"trainer.engine={engine}",
            f"strategy={strategy}", "monitors.continual.enabled=false", "checkpoint.enabled=false",
            "logger.progress=false",
            "logger.log_every=1000", *(f"strategies.upgd.{k}={v}" for k, v in UPGD_SETTINGS.items()
                                       if strategy == "upgd")]


def clframe_steps_per_s(steps: int, engine: str, strategy: str) -> float:
    built = build(compose(overrides(steps, engine, strategy)))
    start = time.perf_counter()
    fit(built)
    return built.module.cl_step / (time.perf_counter() - start)


def plain_steps_per_s(steps: int, optimizer: str) -> float:
    """The same stream and model as clframe builds, trained by a hand-written loop."""
    built = build(compose(overrides(steps, "fabric", "naive")))
    model = nn.Sequential(built.module.backbone, built.module.head.fc)
    opt = torch.optim.SGD(model.parameters(), lr=0.03) if optimizer == "sgd" else \
        LoopUPGD(model.parameters(), **UPGD_SETTINGS)
    data = [(e.train.x, e.train.y) for e in built.scenario.stream]
    n = 0
    start = time.perf_counter()
    for x, y in data:
        for i in torch.randperm(len(y)).tolist():
            loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=3)
    add_args(p)
    a = p.parse_args()
    if a.short:
        a.steps, a.repeats = 1000, 5
    quiet()
    torch.set_num_threads(1)
    runs = {
        "plain loop, SGD": lambda: plain_steps_per_s(a.steps, "sgd"),
        "clframe SGD (default engine)": lambda: clframe_steps_per_s(a.steps, "auto", "naive"),
        "clframe SGD (Trainer.fit)": lambda: clframe_steps_per_s(a.steps, "trainer", "naive"),
        "plain loop, per-parameter UPGD": lambda: plain_steps_per_s(a.steps, "upgd"),
        "clframe UPGD (default engine)": lambda: clframe_steps_per_s(a.steps, "auto", "upgd"),
    }
    # interleaved, so drifts in machine load hit every variant alike
    med = interleaved(runs, a.repeats)
    detail = (f"input-permuted digits, MLP 64-64-64-64-10, batch 1, {a.steps} steps, 1 thread, "
              f"medians of {a.repeats} interleaved repetitions")
    print(detail)
    for name, v in med.items():
        ref = "plain loop, SGD" if "SGD" in name else "plain loop, per-parameter UPGD"
        print(f"{name:34s} {v:9.0f} steps/s   {v / med[ref]:.2f}x {ref}")
    figures = [
        Figure("streaming b1 SGD, default engine vs plain loop",
               med["clframe SGD (default engine)"] / med["plain loop, SGD"], 0.5, detail=detail),
        Figure("streaming b1 UPGD, default engine vs per-parameter UPGD loop",
               med["clframe UPGD (default engine)"] / med["plain loop, per-parameter UPGD"], 0.8, detail=detail),
    ]
    report(figures, a.json)


if __name__ == "__main__":
    main()
