"""What a checkpoint costs: the time to write one and its size on disk, for a replay run.

    python benchmarks/checkpoint_cost.py [--dataset mnist_t10k] [--mem-size 2000] [--every 50]

Runs the same config twice in one process, with checkpoints every ``--every`` steps and with
checkpoints off, and prints the mean time per checkpoint (state assembly, finiteness check,
torch.save, fsync, rename, pruning), its size, and the training-time ratio of the two runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch

from clframe.config import compose
from clframe.run.runner import run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", help="digits (bundled) or mnist_t10k (../shared/data/mnist-t10k)")
    p.add_argument("--mem-size", type=int, default=2000)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    torch.set_num_threads(1)
    base = [f"scenario.dataset={a.dataset}", "strategy=replay", f"strategies.replay.mem_size={a.mem_size}",
            f"train.epochs={a.epochs}", "logger.progress=false", "train.num_threads=1"]
    with tempfile.TemporaryDirectory() as tmp:
        on = run(compose(base + [f"checkpoint.every={a.every}", "checkpoint.keep=2"]), f"{tmp}/on")
        off = run(compose(base + ["checkpoint.enabled=false"]), f"{tmp}/off")
    n = on["steps"] // a.every + len(on["acc_matrix"])
    print(f"{a.dataset}, replay mem_size={a.mem_size}, {on['steps']} steps, ~{n} checkpoints")
    print(f"  per checkpoint: {on['checkpoint_save_s'] * 1e3:.1f} ms, {on['checkpoint_mb']:.2f} MB on disk")
    print(f"  training time with checkpoints every {a.every} steps / without: "
          f"{on['train_time_s'] / off['train_time_s']:.3f}")
    print(f"  one checkpoint / one training step: "
          f"{on['checkpoint_save_s'] / (off['train_time_s'] / off['steps']):.1f}")


if __name__ == "__main__":
    main()
