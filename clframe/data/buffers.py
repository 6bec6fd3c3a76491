"""Replay buffers kept as tensors on the data's device, updated without host syncs."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class Buffer:
    """Fixed-capacity sample storage. ``x, y, t`` hold ``capacity + 1`` rows: the last row
    is a write-off slot that absorbs discarded writes, so updates need no host sync.

    Args:
        capacity: maximum number of stored samples.
        seed: seed of the buffer's own random generator.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.seed = seed
        self.size = 0
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.t: Tensor | None = None
        self.gen: torch.Generator | None = None

    def _alloc(self, x: Tensor, y: Tensor, t: Tensor) -> None:
        if self.x is None:
            self.x = x.new_zeros((self.capacity + 1, *x.shape[1:]))
            self.y = y.new_zeros((self.capacity + 1, *y.shape[1:]))  # regression targets may be [N, D]
            self.t = t.new_zeros((self.capacity + 1, *t.shape[1:]))  # [N, K]: K heads per sample
            self.gen = torch.Generator(device=x.device).manual_seed(self.seed)

    def sample(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """``n`` stored samples drawn uniformly with replacement (buffer must be non-empty)."""
        idx = torch.randint(0, self.size, (n,), generator=self.gen, device=self.x.device)
        return self.x[idx], self.y[idx], self.t[idx]

    def contents(self) -> tuple[Tensor, Tensor, Tensor]:
        """The stored samples ``x, y, t``."""
        if self.x is None:
            raise ValueError("buffer is empty")
        return self.x[: self.size], self.y[: self.size], self.t[: self.size]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"size": self.size}
        if self.x is not None:
            state.update(x=self.x, y=self.y, t=self.t, rng=self.gen.get_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size = state["size"]
        if "x" in state:
            self.x, self.y, self.t = state["x"], state["y"], state["t"]
            self.gen = torch.Generator(device=self.x.device)
            self.gen.set_state(state["rng"].cpu())  # generator states are CPU byte tensors, even of CUDA generators


class ReservoirBuffer(Buffer):
    """Reservoir sampling: every sample seen so far is stored with equal probability."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        super().__init__(capacity, seed)
        self.seen = 0

    def add(self, x: Tensor, y: Tensor, t: Tensor) -> None:
        """Offer a batch, as if its samples arrived one by one in order."""
        self._alloc(x, y, t)
        slot = self.take_slots(len(y), y.device)
        self.x[slot], self.y[slot], self.t[slot] = x, y, t

    def take_slots(self, b: int, device: torch.device) -> Tensor:
        """The slot each of ``b`` offered samples is written to (``capacity``, the write-off slot, for those
        not kept), counting them as seen; for a subclass that stores more per sample."""
        n = self.seen + torch.arange(b, device=device)  # stream index of each sample
        j = (torch.rand(b, generator=self.gen, device=device) * (n + 1)).long()
        slot = torch.where(n < self.capacity, n, j)
        slot = torch.where(slot < self.capacity, slot, self.capacity)
        # when two samples of the batch hit one slot the later one wins, as sequentially
        order = torch.arange(b, device=device)
        owner = torch.full((self.capacity + 1,), -1, device=device).scatter_reduce(0, slot, order, "amax")
        self.seen += b
        self.size = min(self.seen, self.capacity)
        return torch.where(owner[slot] == order, slot, self.capacity)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.seen = state["seen"]


class ClassBalancedBuffer(Buffer):
    """Equal room per class seen so far; rebuilt from old contents plus new data."""

    def update(self, x: Tensor, y: Tensor, t: Tensor) -> None:
        """Merge new samples (e.g. a whole experience) and keep a random, class-balanced subset."""
        self._alloc(x, y, t)
        if self.size:
            x, y, t = (torch.cat([a, b]) for a, b in zip(self.contents(), (x, y, t)))
        classes, counts = torch.unique(y, return_counts=True)
        quota = torch.full_like(counts, self.capacity // len(classes))
        quota[: self.capacity % len(classes)] += 1
        # random priority, then rank of each sample within its class
        r = torch.rand(len(y), generator=self.gen, device=y.device)
        order = torch.argsort(r)
        order = order[torch.argsort(y[order], stable=True)]
        starts = torch.cumsum(counts, 0) - counts
        cls_idx = torch.searchsorted(classes, y[order])
        rank = torch.arange(len(y), device=y.device) - starts[cls_idx]
        keep = order[rank < quota[cls_idx]]
        self.size = len(keep)
        self.x[: self.size], self.y[: self.size], self.t[: self.size] = x[keep], y[keep], t[keep]
