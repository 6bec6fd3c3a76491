"""Experience replay from a reservoir or class-balanced buffer."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Interval

from clframe.buffers import ClassBalancedBuffer, ReservoirBuffer
from clframe.distributed import rank, world_size
from clframe.errors import ConfigError
from clframe.plugin import Batch, StepContext, Strategy
from clframe.registry import STRATEGIES, ParamError


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
        seed: seed of the buffer's sampling (default 0; rank r of a multi-process run uses
            ``seed + 7919 r``).

    Under multi-process training every rank keeps its own buffer of the samples it trained on (a
    class-balanced one from its own share of the experience), and checkpoints keep each rank's
    buffer in that rank's file. With ``trainer.split_across_ranks`` (the default) ``mem_size`` and
    ``batch_size_mem`` are global and split across the ranks, so the buffers together hold
    ``mem_size`` samples and a step replays ``batch_size_mem``, as in one process; otherwise every
    rank keeps ``mem_size`` and replays ``batch_size_mem``.
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
        self.split = False  # set in setup: this rank holds a share of the experience

    def setup(self, module: Any) -> None:
        # one buffer per rank under multi-process training, each with its own sampling stream
        self.buffer.seed += 7919 * rank()
        mem_size, self.split = self.buffer.capacity, world_size() > 1 and module.split_across_ranks
        self.buffer.capacity = module.rank_share(mem_size)  # the buffer allocates its rows on the first add
        self.batch_size_mem = module.rank_share(self.batch_size_mem)
        if self.buffer.capacity < 1:
            raise ConfigError(f"replay's mem_size={mem_size} is global and split across {world_size()} processes, "
                              "which leaves a rank without memory; set strategies.<replay>.mem_size to at least the "
                              "number of processes, or trainer.split_across_ranks=false.")

    def before_forward(self, batch: Batch, module: Any) -> Batch:
        if self.buffer.size == 0 or self.batch_size_mem == 0:
            return batch
        xm, ym, tm = self.buffer.sample(self.batch_size_mem)
        weight = None
        if self.mode == "separate":
            n, m = len(batch), len(ym)
            weight = torch.cat([batch.y.new_full((n,), (1 - self.mem_weight) / n, dtype=torch.float32),
                                batch.y.new_full((m,), self.mem_weight / m, dtype=torch.float32)])
        return Batch(torch.cat([batch.x, xm]), torch.cat([batch.y, ym]), torch.cat([batch.t, tm]),
                     batch.exp, weight=weight, n_new=len(batch))

    def after_optimizer_step(self, ctx: StepContext) -> None:
        if isinstance(self.buffer, ReservoirBuffer):
            new = ctx.batch.new_samples()
            self.buffer.add(new.x, new.y, new.t)

    def on_experience_end(self, exp: Any, module: Any) -> None:
        if isinstance(self.buffer, ClassBalancedBuffer):
            data = exp.train
            if self.split:  # every rank keeps samples of its own share, so the buffers do not repeat each other
                data = data.subset(torch.arange(rank(), len(data), world_size(), device=data.y.device))
            self.buffer.update(data.x, data.y, data.t)

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
