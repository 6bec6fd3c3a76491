"""What a checkpoint costs: the time to write one and its size on disk, for a replay run.

    python benchmarks/checkpoint_cost.py [--dataset mnist_t10k] [--mem-size 2000] [--every 50] [--short] [--json PATH]

Runs the same config twice in one process, with checkpoints every ``--every`` steps and with
checkpoints off, and prints the mean time per checkpoint (state assembly, finiteness check,
torch.save, fsync, rename, pruning), its size, and the training-time ratio of the two runs. Our
target: at most 30 ms per checkpoint (docs/running.md measured 8 ms on digits, 28 ms on MNIST).
``--short`` keeps the defaults (digits, 2 epochs: some 90 steps): they are quick already.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

from clframe.config import compose
from clframe.run.runner import run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure, add_args, report  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", help="digits (bundled) or mnist_t10k (../shared/data/mnist-t10k)")
    p.add_argument("--mem-size", type=int, default=2000)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--epochs", type=int, default=2)
    add_args(p)
    a = p.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    torch.set_num_threads(1)
    base = [f"scenario.dataset={a.dataset}", "strategy=replay", f"strategies.replay.mem_size={a.mem_size}",
            f"train.epochs={a.epochs}", "logger.progress=false", "train.num_threads=1"]
    with tempfile.TemporaryDirectory() as tmp:
        on = run(compose(base + [f"checkpoint.every={a.every}", "checkpoint.keep=2"]), f"{tmp}/on")
        off = run(compose(base + ["checkpoint.enabled=false"]), f"{tmp}/off")
    n = on["steps"] // a.every + len(on["acc_matrix"])
    detail = f"{a.dataset}, replay mem_size={a.mem_size}, {on['steps']} steps, ~{n} checkpoints"
    print(detail)
    print(f"  per checkpoint: {on['checkpoint_save_s'] * 1e3:.1f} ms, {on['checkpoint_mb']:.2f} MB on disk")
    print(f"  training time with checkpoints every {a.every} steps / without: "
          f"{on['train_time_s'] / off['train_time_s']:.3f}")
    print(f"  one checkpoint / one training step: "
          f"{on['checkpoint_save_s'] / (off['train_time_s'] / off['steps']):.1f}")
    # in ms: the table prints two decimals, and a checkpoint takes a few ms
    report([Figure(f"checkpoint write, replay {a.mem_size} on {a.dataset} (our target)",
                   on["checkpoint_save_s"] * 1e3, 30.0, higher_is_better=False, unit="ms",
                   detail=f"{detail}, {on['checkpoint_mb']:.2f} MB each")], a.json)


if __name__ == "__main__":
    main()
