"""Online ER at batch 10: clframe vs a plain PyTorch loop doing the same work vs Avalanche 0.6's online ER,
in one process, on one thread.

    python benchmarks/online.py [--repeats 3] [--samples 4000] [--short] [--json PATH] [--profile]

The work: 5 class-incremental experiences of the real MNIST test images (random data without them),
one pass in batches of 10, an MLP 784-256-256-10, SGD lr 0.1, experience replay with a reservoir buffer
of 200 samples and 10 replayed samples per step (concatenated with the incoming 10), no evaluation.
- ``plain``: a hand-written loop; the buffer is clframe's ``ReservoirBuffer`` (the same sampling and
  insertion, so the ratio measures the framework around it: the module, its hooks, the batch plumbing).
- ``clframe``: ``CLModule`` with ``strategy=replay`` (``batch_size_mem=10``) driven by each engine as a
  run drives it (``fit``), the continual evaluator off, the boundary evaluation on 10 samples.
- ``avalanche``: ``split_online_stream`` (mini-experiences of 10) trained by ``OnlineNaive`` with a
  ``ReplayPlugin`` (mem_size 200, batch_size_mem 10), no evaluation metrics.
Each figure is a ratio of samples/s measured in the same run (medians of interleaved repetitions).
``--profile`` prints where clframe's step spends its time (cProfile, top functions).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from clframe.strategies.replay import Replay

from clframe.core.module import CLModule
from clframe.data.buffers import ReservoirBuffer
from clframe.data.iterator import StreamIterator
from clframe.data.stream import Experience, Scenario, Stream, TensorData
from clframe.models.model import Model
from clframe.run.runner import quiet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure, add_args, interleaved, report  # noqa: E402
from throughput import _Backbone, _Head, experiences, load_data, mlp, train  # noqa: E402

BATCH, MEM, REPLAYED, LR = 10, 200, 10, 0.1


def plain(exps: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Samples/s of a hand-written online ER loop (one pass, shuffled, batches of 10 plus 10 replayed)."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    buffer = ReservoirBuffer(MEM, seed=0)
    n, start = 0, time.perf_counter()
    for xe, ye in exps:
        perm = torch.randperm(len(ye))
        xs, ys = xe[perm], ye[perm]
        te = torch.zeros_like(ys)
        for i in range(0, len(ys), BATCH):
            x, y = xs[i: i + BATCH], ys[i: i + BATCH]
            xb, yb = x, y
            if buffer.size:
                xm, ym, _ = buffer.sample(REPLAYED)
                xb, yb = torch.cat([x, xm]), torch.cat([y, ym])
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            buffer.add(x, y, te[i: i + BATCH])
            n += len(y)
    return n / (time.perf_counter() - start)


def clframe_module(exps: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[CLModule, StreamIterator, Scenario]:
    """The module, loader and scenario of an online ER run over ``exps``."""
    stream = Stream([
        Experience(i, TensorData(xe, ye, torch.zeros_like(ye)), TensorData(xe[:10], ye[:10], torch.zeros_like(ye[:10])),
                   sorted(set(ye.tolist())))
        for i, (xe, ye) in enumerate(exps)])
    loader = StreamIterator(stream, BATCH, 1, seed=0)
    strategies = {"replay": Replay(mem_size=MEM, batch_size_mem=REPLAYED)}
    module = CLModule(Model(_Backbone(), _Head()), strategies, stream, loader.steps_per_experience(), lr=LR,
                      log_every=10**9)
    return module, loader, Scenario(stream, 10, (784,))


def clframe_run(exps: list[tuple[torch.Tensor, torch.Tensor]], engine: str) -> float:
    """Samples/s of clframe's online ER under ``engine`` (``auto``: the default, clframe's own loop)."""
    module, loader, scenario = clframe_module(exps)
    seconds = train(module, loader, scenario, engine)
    return module.samples_seen / seconds


def avalanche_run(exps: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Samples/s of Avalanche's online ER: ``OnlineNaive`` + ``ReplayPlugin`` on ``split_online_stream``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Avalanche's deprecation decorators force their warnings on ("always"); drop them from the output
        warnings.showwarning = lambda *args, **kwargs: None
        from avalanche.benchmarks import nc_benchmark
        from avalanche.benchmarks.scenarios.online import split_online_stream
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as make
        from avalanche.training import OnlineNaive
        from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin

        x, y = torch.cat([e[0] for e in exps]), torch.cat([e[1] for e in exps])
        bench = nc_benchmark(make(x, y), make(x[::8], y[::8]), n_experiences=len(exps), task_labels=False,
                             fixed_class_order=list(range(10)))
        model = mlp()
        strategy = OnlineNaive(model, torch.optim.SGD(model.parameters(), lr=LR), train_mb_size=BATCH,
                               plugins=[ReplayPlugin(mem_size=MEM, batch_size_mem=REPLAYED)],
                               evaluator=EvaluationPlugin(loggers=[]), device="cpu")
        start = time.perf_counter()
        for exp in split_online_stream(bench.train_stream, experience_size=BATCH, seed=0):
            strategy.train(exp)
        return len(y) / (time.perf_counter() - start)


def profile(exps: list[tuple[torch.Tensor, torch.Tensor]], top: int = 15) -> None:
    """Print the functions clframe's online ER spends its time in."""
    module, loader, scenario = clframe_module(exps)
    pr = cProfile.Profile()
    pr.enable()
    train(module, loader, scenario, "auto")
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; medians (default 3)")
    parser.add_argument("--samples", type=int, default=4000, help="training samples over the 5 experiences")
    parser.add_argument("--skip-avalanche", action="store_true")
    parser.add_argument("--profile", action="store_true", help="print clframe's profile after the figures")
    add_args(parser)
    args = parser.parse_args()
    if args.short:
        args.samples, args.repeats = min(args.samples, 1000), min(args.repeats, 2)
    torch.set_num_threads(1)
    quiet()
    warnings.simplefilter("ignore")
    x, y, source = load_data()
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[: args.samples]
    exps = experiences(x[keep], y[keep])
    runs = {"plain": lambda: plain(exps), "clframe (loop, the default)": lambda: clframe_run(exps, "auto"),
            "clframe (Fabric)": lambda: clframe_run(exps, "fabric")}
    if not args.skip_avalanche:
        runs["avalanche OnlineNaive+Replay"] = lambda: avalanche_run(exps)
    med = interleaved(runs, args.repeats)
    detail = (f"data: {source}, {args.samples} samples in 5 experiences, one pass, batch {BATCH} + {REPLAYED} "
              f"replayed, buffer {MEM}, 1 thread, medians of {args.repeats} interleaved repetitions")
    print(detail)
    ava = med.get("avalanche OnlineNaive+Replay")
    for k, v in med.items():
        versus = f"   {v / ava:.2f}x avalanche" if ava else ""
        print(f"{k:<30}{v:>9.0f} samples/s   {v / med['plain']:.2f}x plain{versus}")
    ours = med["clframe (loop, the default)"]
    figures = [Figure("online ER b10, clframe vs plain loop", ours / med["plain"], 0.7, detail=detail)]
    if ava:
        figures.append(Figure("online ER b10, clframe vs Avalanche OnlineNaive+Replay", ours / ava, 3.0, detail=detail))
    report(figures, args.json)
    if args.profile:
        profile(exps)


if __name__ == "__main__":
    main()
