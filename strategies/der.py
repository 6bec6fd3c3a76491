"""Dark Experience Replay (Buzzega et al., 2020): replay stored samples' logits, not only their labels."""

from __future__ import annotations

from typing import Annotated, Any

import torch
import torch.nn.functional as F
from annotated_types import Ge
from clframe.strategies._logit_buffer import LogitReservoir, check_replay_setup, draw
from torch import Tensor

from clframe.config.registry import STRATEGIES, ParamError
from clframe.core.strategy import StepContext, Strategy
from clframe.data.batch import Batch
from clframe.run.distributed import rank, world_size


@STRATEGIES.register("der")
class DER(Strategy):
    """DER: ``loss = task + alpha * MSE(f(x_b), z_b)`` on a draw ``(x_b, z_b)`` from a reservoir buffer
    that stores every incoming sample's inputs, labels, task labels and the logits the model gave it
    in its training step (before the update), detached and on the device.

    Buzzega, Boschini, Porrello, Abati, Calderara, "Dark Experience for General Continual Learning:
    a Strong, Simple Baseline", NeurIPS 2020. Checked against Mammoth (aimagelab/mammoth,
    ``models/der.py``, ``models/derpp.py``, ``utils/buffer.py``) and Avalanche 0.6
    (``avalanche.training.supervised.der.DER``). As the paper and Mammoth, not as Avalanche: a reservoir
    buffer filled at every step with the logits of that step (Avalanche keeps a class-balanced buffer
    filled at experience end with the logits of the trained model), replay from the first step on
    (Avalanche from the second experience), draws without replacement, and DER++'s two independent
    draws (Avalanche uses one draw for both terms).

    The buffer samples join the incoming batch in one forward pass (cheaper than Mammoth's separate
    passes; identical without batch-statistics layers such as BatchNorm) with a loss weight of zero,
    so the task loss stays the incoming batch's; the DER terms are computed on their logits. The MSE
    averages over samples and logits (``F.mse_loss``, as Mammoth). Under a regression objective the
    stored outputs are the regressor's, which DER matches all the same.

    Args:
        alpha: weight of the logit-matching term, >= 0 (default 0.2: Mammoth's best for seq-mnist
            with a buffer of 200; the paper's grid for MNIST is 0.2-1.0).
        mem_size: buffer capacity in samples, at least 1 (default 200).
        batch_size_mem: samples in each buffer draw, at least 1; None draws as many as the incoming
            batch has (Mammoth's ``minibatch_size`` = ``batch_size``) (default None).
        seed: seed of the buffer's insertion and draws (default 0).

    Under multi-process training every rank keeps its own buffer of ``mem_size`` samples of what it
    trained on (seed ``seed + 7919 rank``) and draws from it for its own part of the batch. Refused
    beside another strategy that rewrites the batch (``replay``, ``er_ace``, ``der``/``derpp``), and with
    a hypernetwork on a stream of several tasks (its batch must hold one task).
    """

    n_draws = 1  # DER++ draws a second, independent batch for its label term

    def __init__(
        self,
        alpha: Annotated[float, Ge(0)] = 0.2,
        mem_size: int = 200,
        batch_size_mem: int | None = None,
        seed: int = 0,
    ) -> None:
        if mem_size < 1:
            raise ParamError("mem_size", f"must be >= 1, got {mem_size}: the buffer needs room for at least one "
                             "sample", "Set it to the number of samples to keep (default 200).")
        if batch_size_mem is not None and batch_size_mem < 1:
            raise ParamError("batch_size_mem", f"must be >= 1 or null, got {batch_size_mem}: a draw of no "
                             "samples replays nothing", "Leave it null to draw as many as the incoming batch "
                             "has, or use strategy=naive to train without replay.")
        self.alpha, self.batch_size_mem = alpha, batch_size_mem
        self.buffer = LogitReservoir(mem_size, seed)
        # this step's layout: (where the drawn samples start in the batch, each draw's size), and the
        # first draw's stored logits; None when nothing was drawn
        self._layout: tuple[int, list[int]] | None = None
        self._z: Tensor | None = None

    def setup(self, module: Any) -> None:
        check_replay_setup(module, self)
        if world_size() > 1:  # a buffer per rank, each with its own sampling stream
            self.buffer.seed += 7919 * rank()

    def before_forward(self, batch: Batch, module: Any) -> Batch:
        self._layout = self._z = None
        if self.buffer.size == 0:
            return batch
        n = len(batch)
        m = self.batch_size_mem or (n if batch.n_new is None else batch.n_new)
        idx = [draw(self.buffer, m) for _ in range(self.n_draws)]
        b = self.buffer
        self._layout, self._z = (n, [len(i) for i in idx]), b.z[idx[0]]
        # the incoming batch (and whatever an earlier strategy added) keeps its loss weights; the
        # drawn samples weigh zero in the task loss: their terms are this strategy's
        prev = batch.weight if batch.weight is not None else torch.full((n,), 1 / n, device=batch.y.device)
        weight = torch.cat([prev, prev.new_zeros(sum(self._layout[1]))])
        return Batch(torch.cat([batch.x, *(b.x[i] for i in idx)]), torch.cat([batch.y, *(b.y[i] for i in idx)]),
                     torch.cat([batch.t, *(b.t[i] for i in idx)]), batch.exp, weight=weight,
                     n_new=n if batch.n_new is None else batch.n_new, shares=batch.shares)

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        if self._layout is None:
            return {}
        start, sizes = self._layout
        out = ctx.logits[start: start + sizes[0]]
        return {"der_mse": self.alpha * F.mse_loss(out, self._z.to(out.dtype))}

    def after_optimizer_step(self, ctx: StepContext) -> None:
        # the logits of the incoming samples from this step's forward, taken before the update (Mammoth's
        # outputs.data); the drawn samples are not offered again
        # (the inputs stored un-augmented: a replayed sample is augmented afresh, as in Mammoth)
        new = ctx.batch.new_samples()
        self.buffer.add(new.x, new.y, new.t, ctx.logits[: len(new)].detach())

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
