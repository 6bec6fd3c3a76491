"""Recurrent training throughput: clframe's GRU backbone vs a plain PyTorch loop, in one process.

The work: class-incremental sequential digits (8 steps of 8 pixels, 5 experiences), a one-layer
GRU of 128 units and a linear head, batch 32, Adam, one thread. The plain loop is what a user would
write: ``nn.GRU`` on the 8x8 rows and the last step's output, no valid-step channel. clframe runs
under its default engine (``trainer.engine=auto``: Fabric for one process) and under Trainer.fit.
Prints steps/s of each (medians of interleaved repetitions, after one warm-up run each) and the
ratios; our target for the default engine is 0.8x the plain loop.

    python benchmarks/rnn_throughput.py [--epochs 3] [--repeats 3] [--short] [--json PATH]

``--short``: 3 epochs, 7 repetitions.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clframe.config.registry import SCENARIOS
from clframe.core.module import CLModule
from clframe.data.iterator import StreamIterator
from clframe.data.stream import Scenario
from clframe.models.backbones.rnn import GRU
from clframe.models.heads.linear import LinearHead
from clframe.models.model import Model
from clframe.run.runner import quiet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure, add_args, interleaved, report  # noqa: E402
from throughput import train  # noqa: E402

BATCH, HIDDEN, LR = 32, 128, 1e-3


def plain(stream: list[tuple[torch.Tensor, torch.Tensor]], epochs: int) -> float:
    """The reference: nn.GRU + nn.Linear over the same experiences and batches."""
    torch.manual_seed(0)
    rnn, fc = nn.GRU(8, HIDDEN, batch_first=True), nn.Linear(HIDDEN, 10)
    opt = torch.optim.Adam([*rnn.parameters(), *fc.parameters()], lr=LR)
    steps = 0
    start = time.perf_counter()
    for xe, ye in stream:
        for _ in range(epochs):
            perm = torch.randperm(len(ye))
            xs, ys = xe[perm], ye[perm]
            for i in range(0, len(ys), BATCH):
                out, _ = rnn(xs[i: i + BATCH])
                loss = F.cross_entropy(fc(out[:, -1]), ys[i: i + BATCH])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
    return steps / (time.perf_counter() - start)


def clframe_run(scenario: Scenario, epochs: int, engine: str) -> float:
    """clframe's CLModule with the registered ``gru`` backbone over the same stream."""
    torch.manual_seed(0)
    loader = StreamIterator(scenario.stream, BATCH, epochs, seed=0)
    module = CLModule(Model(GRU(scenario.input_shape, hidden=HIDDEN), LinearHead(HIDDEN, 10)), {}, scenario.stream,
                      loader.steps_per_experience(), optimizer="adam", lr=LR, log_every=10**9)
    seconds = train(module, loader, scenario, engine)
    return module.cl_step / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="passes over each experience (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; medians reported")
    add_args(parser)
    args = parser.parse_args()
    if args.short:
        args.epochs, args.repeats = 3, 7
    torch.set_num_threads(1)
    quiet()
    warnings.simplefilter("ignore")
    scenario = SCENARIOS.build("sequential_digits", {})
    for e in scenario.stream:  # boundary evaluation on 10 samples: the comparison is about training steps
        e.eval = e.eval.subset(torch.arange(10))
    rows = [(e.train.x[..., :-1], e.train.y) for e in scenario.stream]  # the plain loop gets no valid-step channel
    runs = {"plain": lambda: plain(rows, args.epochs),
            "clframe (default engine)": lambda: clframe_run(scenario, args.epochs, "auto"),
            "clframe (Trainer.fit)": lambda: clframe_run(scenario, args.epochs, "trainer")}
    med = interleaved(runs, args.repeats)
    n = sum(len(e.train) for e in scenario.stream)
    detail = (f"sequential digits: {n} training sequences of 8 steps, 5 experiences, {args.epochs} epochs each, "
              f"GRU {HIDDEN}, batch {BATCH}, Adam, 1 thread, medians of {args.repeats} interleaved repetitions")
    print(detail)
    for k, v in med.items():
        print(f"{k:<26}{v:>10.1f} steps/s   {v / med['plain']:.2f}x plain")
    figures = [Figure("GRU b32, default engine vs plain loop (our target)",
                      med["clframe (default engine)"] / med["plain"], 0.8, detail=detail)]
    report(figures, args.json)


if __name__ == "__main__":
    main()
