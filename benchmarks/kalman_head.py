"""Steps per second of the Kalman-filter head against an SGD-trained linear head.

    .venv/bin/python benchmarks/kalman_head.py [--features 256] [--classes 10] [--batch 1]
        [--steps 2000] [--warmup 100] [--threads 1] [--device cpu]

Both heads read the same precomputed features (a frozen backbone), so the timing is the head's
whole training step: for the SGD head the linear forward, cross-entropy, backward and an SGD step;
for the Kalman head (``clframe.models.heads.kalman``) the predictive log-likelihood (Monte Carlo class
probabilities and the closed-form gradients of gamma, the noise and the temperature included; no
backward, since a frozen backbone's features carry no gradient), the drift and the rank-1
Joseph-form update of the mean and the shared covariance, and the online SGD step on gamma, the
noise and the temperature. It also times the Kalman head with ``state_dtype=float32`` and with
the probit predictive. The configurations take turns in blocks of ``--block`` steps, so a change of
machine load hits all of them alike while each block runs with warm caches (alternating single
steps flatters the Kalman head: its 0.5 MB covariance evicts the SGD head's working set, which
then runs ~2x slower). The median time per step over ``--steps`` gives steps/s and each head's
ratio to the SGD head (the issue's target: Kalman >= 0.5x the SGD head at m=256, K=10, batch 1).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from clframe.models.heads.kalman import KalmanHead


def sgd_step_fn(m: int, k: int, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One training step of an SGD linear head (lr 0.01)."""
    head = nn.Linear(m, k).to(device)
    opt = torch.optim.SGD(head.parameters(), lr=0.01)

    def step(h: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(head(h), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def kalman_step_fn(m: int, k: int, device: torch.device, **kw) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One training step of a Kalman head (its defaults, overridden by ``kw``)."""
    head = KalmanHead(m, k, **kw).to(device)
    t = torch.zeros(1, dtype=torch.long, device=device)

    def step(h: torch.Tensor, y: torch.Tensor) -> None:
        _, loss, _ = head.online_step(h, y, t)
        if loss.requires_grad:  # only a fine-tuned backbone's features carry a gradient
            loss.backward()
        head.observe()
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--block", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    m, k = a.features, a.classes
    g = torch.Generator().manual_seed(0)
    n = a.steps + a.warmup
    hs = torch.randn(n, a.batch, m, generator=g).to(dev)
    ys = torch.randint(k, (n, a.batch), generator=g).to(dev)
    configs = {
        "sgd linear head": sgd_step_fn(m, k, dev),
        "kalman (mc, float64)": kalman_step_fn(m, k, dev),
        "kalman (mc, float32)": kalman_step_fn(m, k, dev, state_dtype="float32"),
        "kalman (probit, float64)": kalman_step_fn(m, k, dev, predictive="probit"),
    }
    times: dict[str, list[float]] = {c: [] for c in configs}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for start in range(0, n, a.block):
        for name, step in configs.items():
            for i in range(start, min(start + a.block, n)):
                sync()
                t0 = time.perf_counter()
                step(hs[i], ys[i])
                sync()
                if i >= a.warmup:
                    times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["sgd linear head"])
    print(f"m={m} K={k} batch={a.batch} device={a.device} threads={a.threads} steps={a.steps} block={a.block}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:26s} {1e6 * med:8.1f} us/step  {1 / med:9.0f} steps/s  ratio to SGD head {base / med:.2f}x")


if __name__ == "__main__":
    main()
