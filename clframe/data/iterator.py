"""The stream iterator: batches of every experience, in order, from in-memory tensors.

Stateful and resumable: the position is (experience, epoch, batch), and the shuffle
of each (experience, epoch) comes from its own seed, so any position can be
re-entered without replaying the batches before it. Under multi-process training each
rank takes its share of every global batch of ``batch_size`` samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from clframe.data.batch import Batch
from clframe.data.stream import Stream
from clframe.run.distributed import share


class StreamIterator:
    """Iterate a whole stream as one sequence of batches.

    Args:
        stream: the experiences to train on, in order.
        batch_size: samples per optimizer step over all ranks (the global batch; each of
            ``world_size`` ranks takes a near-equal share).
        epochs: passes over each experience before moving on (default 1).
        seed: base seed for the per-(experience, epoch) shuffles.
        shuffle: shuffle within each epoch (default True).
        rank: this process's rank (default 0).
        world_size: number of processes sharing each global batch, at most ``batch_size`` (default 1).
    """

    def __init__(
        self, stream: Stream, batch_size: int, epochs: int = 1, seed: int = 0, shuffle: bool = True,
        rank: int = 0, world_size: int = 1,
    ) -> None:
        if batch_size < 1 or epochs < 1:
            raise ValueError(f"batch_size and epochs must be >= 1, got {batch_size}, {epochs}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got {rank}, {world_size}")
        if batch_size < world_size:
            raise ValueError(f"a global batch of {batch_size} cannot be shared by {world_size} ranks")
        self.rank, self.world_size = rank, world_size
        self.stream = stream
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed = seed
        self.shuffle = shuffle
        self.position = {"exp": 0, "epoch": 0, "batch": 0}

    def batches_per_epoch(self, exp: int) -> int:
        return -(-len(self.stream[exp].train) // self.batch_size)

    def steps_per_experience(self) -> list[int]:
        """Optimizer steps each experience takes."""
        return [self.batches_per_epoch(i) * self.epochs for i in range(len(self.stream))]

    def __len__(self) -> int:
        """Batches left from the current position."""
        steps = self.steps_per_experience()
        e, ep, b = self.position["exp"], self.position["epoch"], self.position["batch"]
        return sum(steps[e:]) - ep * self.batches_per_epoch(e) - b if e < len(steps) else 0

    def _order(self, exp: int, epoch: int, n: int, device: torch.device) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(n, device=device)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + exp) * 1_009 + epoch)
        return torch.randperm(n, generator=g).to(device)

    def __iter__(self) -> Iterator[Batch]:
        from clframe.run.distributed import rank, world_size

        if world_size() > 1:  # the process group is the authority on ranks, whichever launcher started them
            if world_size() != self.world_size:
                raise RuntimeError(f"{world_size()} processes, but the batches were planned for {self.world_size}")
            self.rank = rank()
        bs = self.batch_size
        while self.position["exp"] < len(self.stream):
            e, ep = self.position["exp"], self.position["epoch"]
            data = self.stream[e].train
            # one gather per epoch, then contiguous slices: no per-step indexing copies
            order = self._order(e, ep, len(data), data.y.device)
            data = data.subset(order)
            for b in range(self.position["batch"], self.batches_per_epoch(e)):
                self.position["batch"] = b + 1
                if self.world_size == 1:
                    s = slice(b * bs, (b + 1) * bs)
                    yield Batch(data.x[s], data.y[s], data.t[s], e, index=order[s])
                else:
                    s, shares = self._share(b, len(data))
                    yield Batch(data.x[s], data.y[s], data.t[s], e, shares=shares, index=order[s])
            self.position = {"exp": e + (ep + 1) // self.epochs, "epoch": (ep + 1) % self.epochs, "batch": 0}

    def _share(self, b: int, n: int) -> tuple[slice, tuple[int, ...]]:
        """This rank's rows of global batch ``b`` of an epoch of ``n`` samples, and how many samples
        of the batch every rank holds: near-equal contiguous parts; when the last batch has fewer
        samples than ranks, the short ranks (share 0) take a step on the epoch's first samples."""
        g, w = self.batch_size, self.world_size
        lo, size = b * g, min(g, n - b * g)
        shares = tuple(share(size, r, w) for r in range(w))
        if shares[self.rank] == 0:
            i = (self.rank - size) % n
            return slice(i, i + 1), shares
        start = lo + sum(shares[: self.rank])
        return slice(start, start + shares[self.rank]), shares

    def seek(self, consumed: int) -> None:
        """Move to the position after ``consumed`` batches of the whole stream (a resume: one
        batch is one optimizer step, so this is the run's step count)."""
        steps = self.steps_per_experience()
        e = 0
        while e < len(steps) and consumed >= steps[e]:
            consumed -= steps[e]
            e += 1
        if e == len(steps):
            self.position = {"exp": e, "epoch": 0, "batch": 0}
            return
        per_epoch = self.batches_per_epoch(e)
        self.position = {"exp": e, "epoch": consumed // per_epoch, "batch": consumed % per_epoch}

    def state_dict(self) -> dict[str, Any]:
        """The position of the next batch this iterator will yield (a prefetching
        consumer may be one batch behind it)."""
        return {"position": dict(self.position)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = dict(state["position"])
