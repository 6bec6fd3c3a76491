"""Training throughput: clframe vs a plain PyTorch loop vs Avalanche ``Naive``, in one process.

The work: MLP 784-256-256-10, batch 64, SGD, 10k in-memory samples split into 5
class-incremental experiences, one thread. Prints samples/s of each and the ratios: clframe under
its default engine (``trainer.engine=auto``: Fabric for one process), and under each engine named.

    python benchmarks/throughput.py [--epochs 3] [--repeats 5] [--short] [--json PATH] [--device cuda]

``--device cuda``: the data, the model and every loop on the GPU (Avalanche moves each batch there; its
dataset stays on the host, where it keeps its data); each timing ends with ``torch.cuda.synchronize``.

Uses the real MNIST test set (10k images) when ``../shared/data/mnist-t10k`` (or
``$CLFRAME_MNIST_T10K``) is there, random data otherwise; throughput does not depend on it.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clframe.core.module import CLModule
from clframe.data.iterator import StreamIterator
from clframe.data.stream import Experience, Scenario, Stream, TensorData
from clframe.models.model import Model
from clframe.run.runner import Built, fit, quiet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure, add_args, interleaved, report  # noqa: E402

BATCH, LR, N_EXP = 64, 0.01, 5


def load_data() -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from clframe.data.datasets import load_dataset

        d = load_dataset("mnist_t10k")
        return torch.cat([d.x_train, d.x_test]).flatten(1), torch.cat([d.y_train, d.y_test]), "MNIST t10k"
    except FileNotFoundError:
        g = torch.Generator().manual_seed(0)
        return torch.rand(10_000, 784, generator=g), torch.randint(0, 10, (10_000,), generator=g), "random"


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def experiences(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[(y // 2) == i], y[(y // 2) == i]) for i in range(N_EXP)]


def plain_loop(model: nn.Module, opt: torch.optim.Optimizer, exps: list[tuple[torch.Tensor, torch.Tensor]],
               epochs: int, batch: int, after_experience: Callable[[], object] | None = None) -> int:
    """The reference every benchmark compares with: a hand-written loop over the experiences (shuffled
    each epoch, contiguous batches); ``after_experience`` runs at each experience end. Returns the samples."""
    n = 0
    for xe, ye in exps:
        for _ in range(epochs):
            perm = torch.randperm(len(ye), device=ye.device)
            xs, ys = xe[perm], ye[perm]
            for i in range(0, len(ys), batch):
                loss = F.cross_entropy(model(xs[i : i + batch]), ys[i : i + batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                n += len(ys[i : i + batch])
        if after_experience is not None:
            after_experience()
    return n


def plain(x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    """Samples/s of the plain loop on the MLP over the same experiences and batches."""
    model = mlp().to(x.device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    start = time.perf_counter()
    n = plain_loop(model, opt, experiences(x, y), epochs, BATCH)
    sync(x.device)
    return n / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so a timing covers it (nothing on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()[:-1]
        self.out_features = 256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = mlp()[-1]

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.fc(h)


def clframe_run(x: torch.Tensor, y: torch.Tensor, epochs: int, engine: str) -> float:
    """clframe's CLModule over a tensor stream, driven by Trainer.fit or Fabric."""
    # boundary evaluation stays on (it is part of a clframe run) but on 10 samples, so it
    # costs next to nothing: the comparison is about training steps
    exps = [
        Experience(i, TensorData(xe, ye, torch.zeros_like(ye)), TensorData(xe[:10], ye[:10], torch.zeros_like(ye[:10])),
                   sorted(set(ye.tolist())))
        for i, (xe, ye) in enumerate(experiences(x, y))
    ]
    stream = Stream(exps)
    loader = StreamIterator(stream, BATCH, epochs, seed=0)
    module = CLModule(Model(_Backbone(), _Head()), {}, stream, loader.steps_per_experience(), lr=LR, log_every=10**9)
    seconds = train(module, loader, Scenario(stream, 10, (784,)), engine)
    return module.samples_seen / seconds


def train(module: CLModule, loader: StreamIterator, scenario: Scenario, engine: str) -> float:
    """Seconds to train ``module`` over ``loader`` on the CPU with ``engine`` (``auto``, the default,
    ``trainer`` or ``fabric``, through ``fit`` as a run does); the continual evaluator stays off: this
    measures training steps."""
    start = time.perf_counter()
    device = scenario.stream[0].train.x.device
    config = {"trainer": {"engine": engine, "accelerator": "gpu" if device.type == "cuda" else "cpu", "devices": 1,
                          "strategy": "auto", "num_nodes": 1}, "logger": {"progress": False}}
    fit(Built(config, scenario, module, loader))
    sync(device)
    return time.perf_counter() - start


def avalanche_naive(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, lr: float) -> float:
    """Seconds of Avalanche ``Naive.train`` (SGD, no evaluation metrics) training ``model`` over the same
    5 class-incremental experiences of ``x, y`` as the plain loop."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from avalanche.benchmarks import nc_benchmark
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as make
        from avalanche.training import Naive
        from avalanche.training.plugins import EvaluationPlugin

    device = x.device
    x, y = x.cpu(), y.cpu()
    bench = nc_benchmark(make(x, y), make(x[:500], y[:500]), n_experiences=N_EXP, task_labels=False,
                         fixed_class_order=list(range(10)))
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=lr), train_mb_size=batch,
                     train_epochs=epochs, evaluator=EvaluationPlugin(loggers=[]), device=device)
    start = time.perf_counter()
    for exp in bench.train_stream:
        strategy.train(exp)
    sync(device)
    return time.perf_counter() - start


def avalanche_run(x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    """Samples/s of Avalanche ``Naive`` on the MLP, evaluation plugin disabled."""
    return len(y) * epochs / avalanche_naive(mlp(), x, y, epochs, BATCH, LR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="passes over each experience (default 3)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions; medians (default 5)")
    parser.add_argument("--skip-avalanche", action="store_true")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where everything runs (default cpu)")
    add_args(parser)
    args = parser.parse_args()
    if args.short:  # two passes: the fixed costs of a run (Fabric's set-up, 5 ms) stay small
        args.epochs = 2
    torch.set_num_threads(1)
    quiet()
    warnings.simplefilter("ignore")
    x, y, source = load_data()
    x, y = x.to(args.device), y.to(args.device)
    runs = {"plain": lambda: plain(x, y, args.epochs),
            "clframe (default engine)": lambda: clframe_run(x, y, args.epochs, "auto"),
            "clframe (Trainer.fit)": lambda: clframe_run(x, y, args.epochs, "trainer"),
            "clframe (Fabric)": lambda: clframe_run(x, y, args.epochs, "fabric")}
    if not args.skip_avalanche:
        runs["avalanche Naive"] = lambda: avalanche_run(x, y, args.epochs)
    med = interleaved(runs, args.repeats)
    detail = (f"data: {source}, {len(y)} samples, {N_EXP} experiences, {args.epochs} epochs each, batch {BATCH}, "
              f"{args.device}, 1 CPU thread, medians of {args.repeats} interleaved repetitions")
    print(detail)
    for k, v in med.items():
        print(f"{k:<26}{v:>10.0f} samples/s   {v / med['plain']:.2f}x plain"
              + (f"   {v / med['avalanche Naive']:.2f}x avalanche" if "avalanche Naive" in med else ""))
    default = med["clframe (default engine)"]
    figures = [Figure("MLP b64, default engine vs plain loop", default / med["plain"], 0.9, detail=detail)]
    if "avalanche Naive" in med:
        figures.append(Figure("MLP b64, default engine vs Avalanche Naive", default / med["avalanche Naive"], 2.0,
                              detail=detail))
    report(figures, args.json)


if __name__ == "__main__":
    main()
