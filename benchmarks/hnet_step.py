"""The cost of one hypernetwork training step as the number of earlier tasks grows.

    .venv/bin/python benchmarks/hnet_step.py [--steps 200] [--warmup 10] [--threads 1] [--device cpu] [--short]
                                             [--json PATH]

For ``hnet_mlp`` and ``hnet_rnn`` (chunk size 1000) driving an MLP 64-100-100 with a linear
head of 10 classes, times one full training step of task T: the forward of a batch (32 x 64
random inputs, all of task T; the target's weights generated once per step), cross-entropy,
the output regulariser over K earlier tasks exactly as ``strategies/hnet_reg.py`` computes it
(``beta * (h.generate(past, detach_emb=True) - targets).pow(2).sum(1).mean()``, the targets
generated and detached once before timing), backward and an Adam step, for K in 0, 1, 5, 20
(``n_tasks = K + 1``). For comparison, the same step with the regulariser as a Python loop over
the earlier tasks (one ``generate`` call per task) shows what batching them saves.

Every configuration is built first; then each timed step runs once for every configuration in
turn, so a change of machine load hits all of them alike. Prints the median ms per step over
``--steps`` steps (after ``--warmup`` untimed ones) and ``time(K)/time(1)`` for K = 5 and 20:
sub-linear growth in the number of tasks means ratio(20) well below 20. Our targets, per
hypernetwork: time(20)/time(1) at most 5, and the loop at least 1.2x the batched step at K = 20
(docs/methods/hypernetworks.md measured 2.3x and 2.4x). ``--short``: 200 steps after 5.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from clframe.config.registry import HYPERNETS
from clframe.models.backbones.mlp import MLP
from clframe.models.heads.linear import LinearHead
from clframe.models.hypernets.base import Hypernet
from clframe.models.model import Model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure, add_args, report  # noqa: E402

HYPERNET_NAMES = ("hnet_mlp", "hnet_rnn")
KS = (0, 1, 5, 20)
BATCH, IN, N_CLASSES, CHUNK, BETA, LR = 32, 64, 10, 1000, 0.1, 1e-3


def build(name: str, n_tasks: int, device: torch.device, seed: int = 0) -> Hypernet:
    """``name`` over the target MLP 64-100-100 + linear head 10, chunk size 1000."""
    torch.manual_seed(seed)
    target = Model(MLP(input_shape=(IN,), hidden=(100, 100)), LinearHead(100, N_CLASSES))
    hn = HYPERNETS.build(name, {"chunk_size": CHUNK}, target=target, n_tasks=n_tasks, n_classes=N_CLASSES)
    return hn.to(device)


def reg_batched(hn: Hypernet, past: Tensor, targets: Tensor, beta: float = BETA) -> Tensor:
    """``HnetReg``'s regulariser: one hypernetwork call for all earlier tasks."""
    w = hn.generate(past, detach_emb=True)  # [K, P]
    return beta * (w - targets).pow(2).sum(1).mean()


def reg_loop(hn: Hypernet, past: Tensor, targets: Tensor, beta: float = BETA) -> Tensor:
    """The same value, one ``generate`` call per earlier task (the unbatched reference)."""
    total = None
    for k in range(len(past)):
        term = (hn.generate(past[k : k + 1], detach_emb=True)[0] - targets[k]).pow(2).sum()
        total = term if total is None else total + term
    assert total is not None
    return beta * total / len(past)


class Config:
    """One hypernetwork training on task ``K`` with ``K`` earlier tasks regularised by ``reg``."""

    def __init__(self, name: str, k: int, reg: Callable[..., Tensor], device: torch.device) -> None:
        self.hn = build(name, k + 1, device)
        self.hn.train()
        self.hn.set_active_task(k)
        self.reg = reg
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(BATCH, IN, generator=g).to(device)
        self.y = torch.randint(0, N_CLASSES, (BATCH,), generator=g).to(device)
        self.t = torch.full((BATCH,), k, dtype=torch.long, device=device)
        self.past = torch.arange(k, device=device) if k else None
        with torch.no_grad():
            self.targets = self.hn.generate(self.past).detach() if k else None
        self.opt = torch.optim.Adam([p for p in self.hn.parameters() if p.requires_grad], lr=LR)
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(self) -> float:
        """One training step; returns its wall time in seconds."""
        self.sync()
        start = time.perf_counter()
        loss = F.cross_entropy(self.hn(self.x, self.t), self.y)
        if self.past is not None:
            loss = loss + self.reg(self.hn, self.past, self.targets)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sync()
        return time.perf_counter() - start


def run(names: Sequence[str] = HYPERNET_NAMES, ks: Sequence[int] = KS, steps: int = 200, warmup: int = 10,
        device: str = "cpu") -> dict[str, dict[str, dict[int, float]]]:
    """Median seconds per step: ``{hypernet: {"batched" | "loop": {K: seconds}}}``. K = 0 has no
    regulariser, so its step is the same in both and is timed once (reported under both)."""
    dev = torch.device(device)
    configs: dict[tuple[str, str, int], Config] = {}
    for name in names:
        for k in ks:
            configs[(name, "batched", k)] = Config(name, k, reg_batched, dev)
            if k:
                configs[(name, "loop", k)] = Config(name, k, reg_loop, dev)
    for _ in range(warmup):
        for c in configs.values():
            c.step()
    times: dict[tuple[str, str, int], list[float]] = {key: [] for key in configs}
    for _ in range(steps):
        for key, c in configs.items():  # interleaved: load changes hit every configuration alike
            times[key].append(c.step())
    out: dict[str, dict[str, dict[int, float]]] = {n: {"batched": {}, "loop": {}} for n in names}
    for (name, mode, k), ts in times.items():
        out[name][mode][k] = statistics.median(ts)
    for name in names:
        if 0 in ks:
            out[name]["loop"][0] = out[name]["batched"][0]
    return out


def print_results(results: dict[str, dict[str, dict[int, float]]], ks: Sequence[int]) -> None:
    for name, r in results.items():
        b, lp = r["batched"], r["loop"]
        print(f"  {name}")
        print(f"    {'K':>3} {'batched ms':>11} {'loop ms':>9} {'(loop)/(batched)':>17}")
        for k in ks:
            note = "   (no regulariser)" if k == 0 else f"{lp[k] / b[k]:>17.2f}x"
            print(f"    {k:>3} {b[k] * 1e3:>11.3f} {lp[k] * 1e3:>9.3f} {note}")
        if 1 in ks:
            for k in (x for x in ks if x > 1):
                print(f"    time({k})/time(1): batched {b[k] / b[1]:.2f}x   loop {lp[k] / lp[1]:.2f}x   "
                      f"(linear would be {k}x)")


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, dict[int, float]]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per configuration first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_args(p)
    a = p.parse_args(argv)
    if a.short:
        a.steps, a.warmup = 200, 5
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    torch.set_num_threads(a.threads)
    detail = (f"batch {BATCH}x{IN}, target MLP {IN}-100-100-{N_CLASSES}, chunk {CHUNK}, median over {a.steps} "
              f"steps, {a.device}, {a.threads} thread(s), torch {torch.__version__}")
    print(f"hypernetwork training step (forward + CE + regulariser over K earlier tasks + backward + Adam), {detail}")
    results = run(HYPERNET_NAMES, KS, a.steps, a.warmup, a.device)
    print_results(results, KS)
    figures = []
    for name, r in results.items():
        b, lp = r["batched"], r["loop"]
        figures += [
            Figure(f"{name} step, 20 vs 1 earlier tasks (our target)", b[20] / b[1], 5.0, higher_is_better=False,
                   detail=f"{detail}: {b[1] * 1e3:.2f} and {b[20] * 1e3:.2f} ms"),
            Figure(f"{name} step, K=20: task loop vs batched reg. (our target)", lp[20] / b[20], 1.2,
                   detail=f"{detail}: {lp[20] * 1e3:.2f} and {b[20] * 1e3:.2f} ms"),
        ]
    report(figures, a.json)
    return results


if __name__ == "__main__":
    main()
