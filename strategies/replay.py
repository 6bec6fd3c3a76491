"""Experience replay from a reservoir or class-balanced buffer."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Interval

from clframe.config.registry import STRATEGIES, ParamError
from clframe.core.strategy import StepContext, Strategy
from clframe.data.batch import Batch
from clframe.data.buffers import ClassBalancedBuffer, ReservoirBuffer
from clframe.run.distributed import gather_rows, rank, share, world_size


@STRATEGIES.register("replay")
class Replay(Strategy):
    """Rehearse stored samples alongside each new batch.

    Args:
        mem_size: buffer capacity in samples, at least 1 (default 200).
        buffer: ``reservoir`` (updated after every step; works on boundary-free streams)
            or ``class_balanced`` (equal room per seen class, rebuilt at experience end)
            (default ``reservoir``).
        batch_size_mem: replayed samples per step; 0 replays nothing (default 32).
        mode: ``mixed`` concatenates replayed samples into the batch (one mean loss);
            ``separate`` weighs them as ``(1 - mem_weight) CE_new + mem_weight CE_mem``
            (default ``mixed``).
        mem_weight: weight of the replay loss in ``separate`` mode, in [0, 1] (default 0.5).
        seed: seed of the buffer's sampling (default 0).

    Under multi-process training with ``trainer.split_across_ranks`` (the default) the ranks keep
    one buffer between them, the single-process one: every rank adds the whole global batch
    (gathered from the ranks) and draws the same ``batch_size_mem`` replayed samples, of which it
    trains on its share. A run on N processes is then the run on one. With
    ``trainer.split_across_ranks=false`` every rank keeps its own buffer of ``mem_size`` samples
    of what it trained on (seed ``seed + 7919 rank``) and replays ``batch_size_mem`` of them.
    """

    def __init__(
        self,
        mem_size: int = 200,
        buffer: Literal["reservoir", "class_balanced"] = "reservoir",
        batch_size_mem: Annotated[int, Ge(0)] = 32,
        mode: Literal["mixed", "separate"] = "mixed",
        mem_weight: Annotated[float, Interval(ge=0, le=1)] = 0.5,
        seed: int = 0,
    ) -> None:
        if mem_size < 1:
            raise ParamError("mem_size", f"must be >= 1, got {mem_size}: the replay buffer needs room for at least "
                             "one sample", "Set it to the number of samples to keep (default 200), or drop the "
                             "replay strategy to train without replay (e.g. strategy=naive).")
        self.mode, self.mem_weight, self.batch_size_mem = mode, mem_weight, batch_size_mem
        self.buffer = ReservoirBuffer(mem_size, seed) if buffer == "reservoir" else ClassBalancedBuffer(mem_size, seed)
        if buffer == "class_balanced":
            self.needs_boundaries = "its class-balanced buffer takes each experience at its end (a reservoir does not)"
        self.shared = False  # set in setup: one buffer for all ranks, as in a single process
        self.draw = slice(None)  # this rank's part of each replayed batch

    def setup(self, module: Any) -> None:
        world = world_size()
        self.shared = world > 1 and module.split_across_ranks
        if self.shared:
            start = sum(share(self.batch_size_mem, r, world) for r in range(rank()))
            self.draw = slice(start, start + share(self.batch_size_mem, rank(), world))
        elif world > 1:  # a buffer per rank, each with its own sampling stream
            self.buffer.seed += 7919 * rank()

    def before_forward(self, batch: Batch, module: Any) -> Batch:
        if self.buffer.size == 0 or self.batch_size_mem == 0:
            return batch
        # under shared buffers every rank draws the same global replay batch and trains on its part
        xm, ym, tm = (v[self.draw] for v in self.buffer.sample(self.batch_size_mem))
        weight = None
        if self.mode == "separate":
            n, m = len(batch), len(ym)
            weight = torch.cat([batch.y.new_full((n,), (1 - self.mem_weight) / n, dtype=torch.float32),
                                batch.y.new_full((m,), self.mem_weight / max(m, 1), dtype=torch.float32)])
        return Batch(torch.cat([batch.x, xm]), torch.cat([batch.y, ym]), torch.cat([batch.t, tm]),
                     batch.exp, weight=weight, n_new=len(batch), shares=batch.shares)

    def after_optimizer_step(self, ctx: StepContext) -> None:
        if isinstance(self.buffer, ReservoirBuffer):
            new = ctx.batch.new_samples()
            if self.shared and new.shares is not None:  # every rank adds the whole global batch, in order
                self.buffer.add(*(gather_rows(v, new.shares) for v in (new.x, new.y, new.t)))
            else:
                self.buffer.add(new.x, new.y, new.t)

    def on_experience_end(self, exp: Any, module: Any) -> None:
        if isinstance(self.buffer, ClassBalancedBuffer):
            self.buffer.update(exp.train.x, exp.train.y, exp.train.t)  # the whole experience, on every rank

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
