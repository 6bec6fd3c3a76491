"""A small CNN on the real MNIST test set: clframe's training time vs a plain PyTorch loop and
Avalanche ``Naive``, in one process.

The work, as a new user would set it up: 2 conv layers (5x5, 16 and 32 channels, ReLU, 2x2
max-pool), a linear layer of 128 units and a linear head; batch 32, SGD lr 0.01; MNIST t10k
(``../shared/data/mnist-t10k`` or ``$CLFRAME_MNIST_T10K``; its 80% training split, 8000 images)
in 5 class-incremental experiences, ``--epochs`` passes each; one thread.

- plain: a hand-written loop over the same experiences (shuffled, batches of 32). Its training
  time; and, for the second comparison, the same loop that also builds the accuracy matrix (every
  experience's test data evaluated before training and after each experience, batches of 256).
- clframe: ``clframe run`` with the CNN as a user backbone (``backbone=custom
  backbone.name=cnn_mnist:SmallCNN``) and the continual evaluator off. Its training time is the
  run's own ``train_time_s`` (the training steps: ``fit_time_s`` less ``eval_time_s`` and
  ``checkpoint_time_s``); its whole fit, ``fit_time_s``, adds the accuracy matrix and the default
  checkpoints (every 500 steps and at experience ends). Building the run (data, model) is in neither.
- Avalanche ``Naive``: ``strategy.train`` over the experiences (no evaluation), against clframe's
  training time.

    python benchmarks/cnn_mnist.py [--epochs 2] [--repeats 5] [--short] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so the run can import cnn_mnist:SmallCNN

from figures import Figure, add_args, interleaved, report  # noqa: E402
from throughput import avalanche_naive, plain_loop  # noqa: E402

BATCH, LR, N_EXP = 32, 0.01, 5


class SmallCNN(nn.Module):
    """conv 5x5 (16) -> pool -> conv 5x5 (32) -> pool -> linear 128: the user's backbone.

    Args:
        input_shape: ``(1, 28, 28)``, passed by clframe.
    """

    def __init__(self, input_shape: tuple[int, ...] = (1, 28, 28)) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(input_shape[0], 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(32 * 4 * 4, 128), nn.ReLU(),
        )
        self.out_features = 128

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load() -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Training images and labels, and each experience's test data, of MNIST t10k's split."""
    from clframe.data.datasets import load_dataset

    d = load_dataset("mnist_t10k")
    return d.x_train, d.y_train, experiences(d.x_test, d.y_test)


def experiences(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[(y // 2) == i], y[(y // 2) == i]) for i in range(N_EXP)]


def accuracy_row(model: nn.Module, tests: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """Accuracy on every experience's test data (one host sync): a row of the accuracy matrix."""
    model.eval()
    with torch.inference_mode():
        row = torch.stack([torch.cat([(model(xt[i: i + 256]).argmax(1) == yt[i: i + 256])
                                      for i in range(0, len(yt), 256)]).float().mean() for xt, yt in tests])
    model.train()
    return row.tolist()


def plain(x: torch.Tensor, y: torch.Tensor, epochs: int,
          tests: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> float:
    """Seconds of a hand-written training loop over the same experiences; with ``tests``, it also
    builds the accuracy matrix on them (before training and after each experience)."""
    torch.manual_seed(0)
    model = nn.Sequential(SmallCNN(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    start = time.perf_counter()
    matrix = [accuracy_row(model, tests)] if tests else []
    plain_loop(model, opt, experiences(x, y), epochs, BATCH,
               (lambda: matrix.append(accuracy_row(model, tests))) if tests else None)
    return time.perf_counter() - start


def clframe_run(epochs: int, root: Path, overrides: list[str] = ()) -> dict[str, float]:
    """``summary.json`` of ``clframe run`` on the CNN (its times: ``train_time_s``, ``fit_time_s`` ...)."""
    from clframe.config import compose
    from clframe.run.runner import run

    cfg = compose(["scenario.dataset=mnist_t10k", f"scenario.n_experiences={N_EXP}", "backbone=custom",
                   "backbone.name=cnn_mnist:SmallCNN", f"train.batch_size={BATCH}", f"train.lr={LR}",
                   f"train.epochs={epochs}", "monitors.continual.enabled=false", "logger.progress=false",
                   *overrides])
    out = Path(tempfile.mkdtemp(dir=root))
    return run(cfg, out)


def avalanche_run(x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    """Seconds of Avalanche ``Naive.train`` on the CNN over the same experiences (no evaluation metrics)."""
    torch.manual_seed(0)
    return avalanche_naive(nn.Sequential(SmallCNN(), nn.Linear(128, 10)), x, y, epochs, BATCH, LR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="passes over each experience (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions; medians (default 5)")
    parser.add_argument("--skip-avalanche", action="store_true")
    add_args(parser)
    args = parser.parse_args()
    if args.short:
        args.epochs, args.repeats = 1, 5
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from clframe.run.build import quiet

    quiet()
    try:
        x, y, tests = load()
    except FileNotFoundError as e:
        print(f"skipped: {e}")
        return
    summaries: list[dict[str, float]] = []

    def clframe_timed(key: str) -> float:
        if key == "train_time_s":  # one run gives both times; the fit time is read from the same run
            summaries.append(clframe_run(args.epochs, Path(tmp)))
        return summaries[-1][key]

    with tempfile.TemporaryDirectory() as tmp:
        runs = {"plain": lambda: plain(x, y, args.epochs), "clframe": lambda: clframe_timed("train_time_s"),
                "clframe fit": lambda: clframe_timed("fit_time_s"),
                "plain + accuracy matrix": lambda: plain(x, y, args.epochs, tests)}
        if not args.skip_avalanche:
            runs["avalanche"] = lambda: avalanche_run(x, y, args.epochs)
        sec = interleaved(runs, args.repeats)
    detail = (f"{len(y)} MNIST t10k images, {N_EXP} experiences x {args.epochs} epochs, batch {BATCH}, 1 thread, "
              f"medians of {args.repeats} interleaved repetitions: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in sec.items()))
    figures = [Figure("small CNN on MNIST t10k, training time vs plain loop", sec["plain"] / sec["clframe"], 0.95,
                      detail=detail),
               Figure("small CNN, whole fit vs plain loop + accuracy matrix (ours)",
                      sec["plain + accuracy matrix"] / sec["clframe fit"], 0.9, detail=detail)]
    if "avalanche" in sec:
        figures.append(Figure("small CNN on MNIST t10k vs Avalanche Naive", sec["avalanche"] / sec["clframe"], 1.1,
                              detail=detail))
    print(detail)
    report(figures, args.json)


if __name__ == "__main__":
    main()
