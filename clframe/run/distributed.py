"""Multi-process helpers: which rank this is, and reductions across ranks (no-ops in one process)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if initialized() else 1


def is_main_rank() -> bool:
    """True on rank 0: the process that evaluates and writes the run's records."""
    if initialized():
        return dist.get_rank() == 0
    # before the process group exists, the launcher (Lightning's, torchrun, Slurm) has set the rank in the
    # environment; read as Lightning's rank_zero_only does, without importing Lightning
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return True


def share(n: int, rank: int, world_size: int) -> int:
    """Rank ``rank``'s part of ``n`` items split into ``world_size`` near-equal parts (the first
    ``n % world_size`` ranks take one more)."""
    q, r = divmod(n, world_size)
    return q + (rank < r)


def gather_rows(x: torch.Tensor, shares: Sequence[int]) -> torch.Tensor:
    """Every rank's first ``shares[rank]`` rows of ``x``, concatenated in rank order, on every rank
    (one all_gather; the sizes are known on every rank, so nothing is read back to the host)."""
    world, most = len(shares), max(shares)
    padded = x.new_zeros((most, *x.shape[1:]))
    padded[: shares[rank()]] = x[: shares[rank()]]
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, shares)])


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over ranks, in place (``t`` itself in one process)."""
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """``t`` maximised over ranks, in place (``t`` itself in one process)."""
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def max_diff_across_ranks(module: nn.Module) -> float:
    """Largest absolute difference between this rank's parameters and rank 0's, over all ranks.
    0.0 means every rank holds exactly the same weights."""
    flat = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    diff = (flat - ref).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)
