"""The SRWM Triton kernel against the plain-PyTorch loop, on a GPU.

    python benchmarks/kernels.py [--lengths 256 1024 4096] [--batch 8] [--heads 8] [--dim 64] [--repeats 5]
                                 [--short] [--json PATH]

For every sequence length and dtype (fp32, bf16) it times the forward alone and forward + backward
of ``clframe.kernels.srwm`` with ``backend="triton"`` and ``backend="naive"`` (d_out = D, so each
head's fast weights are [3D + 4, D]), and reports the medians, the speed-up and each one's peak
memory. The target is a 20x speed-up at T = 1024 for forward + backward, and memory O(T D) per head
(the kernel never stores a W_t; the naive loop keeps every step's W for autograd: O(T D^2)).
The naive loop is skipped where it would not fit (``--naive-max-len``). ``--device cpu`` runs the
kernel in Triton's interpreter (TRITON_INTERPRET=1, set here unless it is set), only to check the
script with tiny sizes. ``--device`` defaults to CUDA when there is one.

``--short``: on a GPU, T = 1024 only (both dtypes, the figures: the fwd+bwd speed-ups against the
20x target); without one, T = 16, B = 1, H = 2, D = 8, fp32 in the interpreter, and no figures (the
interpreter's speed says nothing about the kernel's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from clframe.kernels.srwm import srwm
from clframe.kernels.srwm.naive import N_RATES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure, add_args, report  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TARGET_T, TARGET_SPEEDUP = 1024, 20.0  # forward + backward


def timed(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn`` over ``repeats`` runs (after one warm-up) and its peak memory in MiB."""
    fn()
    times = []
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20 if cuda else float("nan")
    return statistics.median(times), peak


def case(backend: str, t: int, b: int, h: int, d: int, dtype: torch.dtype, device: str, backward: bool
         ) -> Callable[[], object]:
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(b, t, h, d, generator=g).to(device, dtype).requires_grad_(backward)
    w0 = (torch.randn(b, h, 3 * d + N_RATES, d, generator=g) / d ** 0.5).to(device, dtype).requires_grad_(backward)

    def run() -> object:
        if not backward:
            with torch.no_grad():
                return srwm(x, w0, d, backend=backend)
        y, w = srwm(x, w0, d, backend=backend)
        return torch.autograd.grad(y.float().sum() + w.float().sum(), (x, w0))

    return run


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--naive-max-len", type=int, default=4096)
    p.add_argument("--device", default=None, help="cuda (the default where there is one) or cpu")
    add_args(p)
    a = p.parse_args(argv)
    if a.device is None:
        if not torch.cuda.is_available() and not a.short:
            p.error("no CUDA here: the benchmark needs a GPU (--short or --device cpu with tiny sizes runs the "
                    "kernel in Triton's interpreter)")
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.short:
        if a.device.startswith("cuda"):
            a.lengths = [TARGET_T]
        else:
            a.lengths, a.batch, a.heads, a.dim, a.dtypes = [16], 1, 2, 8, ["fp32"]
    if a.device == "cpu":
        # read when the kernel is first imported, i.e. on the first triton call below
        os.environ.setdefault("TRITON_INTERPRET", "1")
    rows = []
    print(f"SRWM kernel vs naive loop, B={a.batch} H={a.heads} D={a.dim}, {a.device}, median of {a.repeats}")
    print(f"{'T':>6} {'dtype':>5} {'pass':>8} {'triton ms':>10} {'naive ms':>10} {'speed-up':>9} "
          f"{'triton MiB':>11} {'naive MiB':>10}")
    for t in a.lengths:
        for name in a.dtypes:
            for backward in (False, True):
                args = (t, a.batch, a.heads, a.dim, DTYPES[name], a.device, backward)
                tk, mk = timed(case("triton", *args), a.device, a.repeats)
                tn, mn = timed(case("naive", *args), a.device, a.repeats) if t <= a.naive_max_len else (None, None)
                row = {"T": t, "dtype": name, "pass": "fwd+bwd" if backward else "fwd", "triton_s": tk,
                       "naive_s": tn, "speedup": tn / tk if tn else None, "triton_mib": mk, "naive_mib": mn}
                rows.append(row)
                naive = f"{tn * 1e3:10.2f}" if tn else f"{'-':>10}"
                up = f"{tn / tk:8.1f}x" if tn else f"{'-':>9}"
                nm = f"{mn:10.1f}" if mn is not None else f"{'-':>10}"
                print(f"{t:>6} {name:>5} {row['pass']:>8} {tk * 1e3:10.2f} {naive} {up} {mk:11.1f} {nm}")
    figures = []
    if a.device.startswith("cuda"):
        detail = f"B={a.batch} H={a.heads} D={a.dim}, {torch.cuda.get_device_name()}, median of {a.repeats}"
        figures = [Figure(f"SRWM fwd+bwd T={r['T']} {r['dtype']}, Triton vs naive loop", r["speedup"], TARGET_SPEEDUP,
                          detail=detail)
                   for r in rows if r["T"] == TARGET_T and r["pass"] == "fwd+bwd" and r["speedup"]]
    else:
        print(f"no figures: on the CPU the kernel runs in Triton's interpreter, whose speed says nothing about the "
              f"{TARGET_SPEEDUP:g}x target (T = {TARGET_T}, fwd+bwd, on a GPU)")
    report(figures, a.json)
    return rows


if __name__ == "__main__":
    main()
