"""The cost of one UPGD step: clframe's foreach UPGD against the same math as a per-parameter loop.

    python benchmarks/upgd_step.py [--steps 200] [--repeats 15] [--short] [--json PATH]

Times ``optimizer.step()`` alone (the gradients are set once) on ReLU MLPs 64-128-128-10 and
784-300-150-10 as at batch size 1, on one CPU thread, for global and local scaling with the
default settings (noise on). The two implementations alternate in every repetition, and the
medians are compared: ``(loop)/(ours)`` above 1 means clframe's step is faster (our target: at
least 1, for every model and scaling). ``--short``: 7 repetitions of 100 steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clframe.optim import UPGD

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure, add_args, report  # noqa: E402


class LoopUPGD(torch.optim.Optimizer):
    """The reference formulation: two passes, one parameter at a time, regular in-place torch ops."""

    def __init__(self, params, lr=0.01, weight_decay=0.0, beta_utility=0.999, sigma=0.001, scaling="global"):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, beta_utility=beta_utility, sigma=sigma))
        self.scaling = scaling

    @torch.no_grad()
    def step(self):
        eta = None
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["step"], state["utility"] = 0, torch.zeros_like(p)
                state["step"] += 1
                u = state["utility"]
                u.mul_(group["beta_utility"]).add_(-p.grad * p, alpha=1 - group["beta_utility"])
                if self.scaling == "global":
                    eta = u.max() if eta is None else torch.maximum(eta, u.max())
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                u_hat = state["utility"] / (1 - group["beta_utility"] ** state["step"])
                if self.scaling == "global":
                    s = torch.sigmoid_(u_hat / eta)
                else:
                    s = torch.sigmoid_(F.normalize(u_hat, dim=-1))
                noise = torch.randn_like(p) * group["sigma"]
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_((p.grad + noise) * (1 - s), alpha=-group["lr"])


def mlp(sizes: list[int]) -> nn.Module:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def per_step(opt: torch.optim.Optimizer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps


def compare(sizes: list[int], scaling: str, steps: int, repeats: int) -> float:
    models = {}
    for name in ("ours", "loop"):
        torch.manual_seed(0)
        model = mlp(sizes)
        x, y = torch.randn(1, sizes[0]), torch.randint(0, sizes[-1], (1,))  # batch size 1
        F.cross_entropy(model(x), y).backward()
        models[name] = model
    opts = {"ours": UPGD(models["ours"].parameters(), scaling=scaling),
            "loop": LoopUPGD(models["loop"].parameters(), scaling=scaling)}
    for opt in opts.values():
        per_step(opt, 20)  # warm-up
    times: dict[str, list[float]] = {"ours": [], "loop": []}
    for _ in range(repeats):
        for name, opt in opts.items():
            times[name].append(per_step(opt, steps))
    ours, loop = statistics.median(times["ours"]), statistics.median(times["loop"])
    label = "-".join(map(str, sizes))
    print(f"  {label:<16} {scaling:<7} ours {ours * 1e6:7.1f} us   loop {loop * 1e6:7.1f} us   "
          f"(loop)/(ours) {loop / ours:.2f}x")
    return loop / ours


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=15, help="alternating timed blocks per implementation")
    add_args(p)
    a = p.parse_args()
    if a.short:
        a.steps, a.repeats = 100, 7
    torch.set_num_threads(1)
    detail = f"UPGD.step, median per step over {a.repeats} x {a.steps} steps, 1 thread, torch {torch.__version__}"
    print(detail)
    figures = []
    for sizes in ([64, 128, 128, 10], [784, 300, 150, 10]):
        for scaling in ("global", "local"):
            ratio = compare(sizes, scaling, a.steps, a.repeats)
            label = "-".join(map(str, sizes))
            figures.append(Figure(f"UPGD step {label} {scaling} vs per-param loop (our target)", ratio, 1.0,
                                  detail=detail))
    report(figures, a.json)


if __name__ == "__main__":
    main()
