"""ER-ACE (Caccia et al., 2022): experience replay with an asymmetric cross-entropy."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from clframe.strategies._logit_buffer import check_replay_setup, draw
from torch import Tensor

from clframe.config.registry import STRATEGIES, ParamError
from clframe.core.objectives import IGNORE
from clframe.core.strategy import StepContext, Strategy
from clframe.data.batch import Batch
from clframe.data.buffers import ReservoirBuffer
from clframe.errors import ConfigError
from clframe.run.distributed import rank, world_size


@STRATEGIES.register("er_ace")
class ERACE(Strategy):
    """ER-ACE: ``loss = CE_present(f(x_in), y_in) + CE(f(x_b), y_b)``. The incoming batch's
    cross-entropy sees only the logits of the classes present in that batch (the others are masked
    to the dtype's lowest value), so new classes do not push old ones down; a draw from a reservoir
    buffer of past samples takes the full cross-entropy. Task-free, as the paper and its code (which
    forces ``task_free``): masking from the first step, replay as soon as the buffer holds a sample; the
    buffer takes every incoming sample, at every step, by reservoir sampling. No experience boundary is
    used, so it runs on boundary-free streams too.

    Caccia, Aljundi, Asadi, Tuytelaars, Pineau, Belilovsky, "New Insights on Reducing Abrupt
    Representation Change in Online Continual Learning", ICLR 2022. Checked against Mammoth
    (aimagelab/mammoth, ``models/er_ace.py``) and Avalanche 0.6 (``avalanche.training.ER_ACE``,
    ``ACECriterion``). Where they depart from the paper, this follows the paper:
    - Mammoth and Avalanche mask and replay only from the second experience on (``if task > 0``), and
      train the first with the plain cross-entropy.
    - Avalanche averages the two terms (``(CE_in + CE_b) / 2``); the paper, its code and Mammoth add
      them (with SGD, Avalanche's is the same run at half the learning rate after the first experience).
    - Avalanche's buffer is class-balanced and takes the whole experience before training on it, so its
      draws include current samples; here (paper, Mammoth) it holds what was trained on, by reservoir.
    - Mammoth and the reference code also unmask the class ids from the largest seen one on (classes
      not seen yet, when class ids come in order); the paper and Avalanche mask every absent class.

    The drawn samples join the incoming batch in one forward pass (identical without batch-statistics
    layers such as BatchNorm). The incoming samples weigh zero in the module's task loss, which is
    then the buffer's cross-entropy, and the masked cross-entropy is the ``ace`` loss term, with the
    incoming samples' weights (mean over them, or what an earlier strategy set).

    Args:
        mem_size: buffer capacity in samples, at least 1 (default 200).
        batch_size_mem: samples drawn from the buffer (without replacement) per step, at least 1; None
            draws as many as the incoming batch has (Mammoth's ``minibatch_size`` = ``batch_size``; the
            paper's code: 10 and 10) (default None).
        seed: seed of the buffer's insertion and draws (default 0).

    Under multi-process training every rank keeps its own buffer of ``mem_size`` samples of what it
    trained on (seed ``seed + 7919 rank``); the classes present are those of the rank's part of the batch.
    Refused on a regression objective, beside another strategy that rewrites the batch (``replay``,
    ``der``, ``derpp``), and with a hypernetwork on a stream of several tasks (its batch must hold one task).
    """

    def __init__(self, mem_size: int = 200, batch_size_mem: int | None = None, seed: int = 0) -> None:
        if mem_size < 1:
            raise ParamError("mem_size", f"must be >= 1, got {mem_size}: the buffer needs room for at least one "
                             "sample", "Set it to the number of samples to keep (default 200).")
        if batch_size_mem is not None and batch_size_mem < 1:
            raise ParamError("batch_size_mem", f"must be >= 1 or null, got {batch_size_mem}: a draw of no "
                             "samples replays nothing", "Leave it null to draw as many as the incoming batch "
                             "has, or use strategy=naive to train without replay.")
        self.batch_size_mem = batch_size_mem
        self.buffer = ReservoirBuffer(mem_size, seed)
        # this step's incoming samples' count and loss weights; None when the step is a plain one
        self._incoming: tuple[int, Tensor] | None = None

    def setup(self, module: Any) -> None:
        if module.objective.regression:
            raise ConfigError("strategy 'er_ace' masks the logits of the classes absent from the incoming batch "
                              "and needs class labels, but this scenario's objective is regression. Use "
                              "strategy=replay (or der, derpp) for replay on a regression scenario.")
        check_replay_setup(module, self)
        if world_size() > 1:  # a buffer per rank, each with its own sampling stream
            self.buffer.seed += 7919 * rank()

    def before_forward(self, batch: Batch, module: Any) -> Batch:
        self._incoming = None
        n = len(batch)
        n_in = n if batch.n_new is None else batch.n_new
        prev = batch.weight if batch.weight is not None else torch.full((n,), 1 / n, device=batch.y.device)
        # the incoming samples' cross-entropy moves to the masked term (with their mean's weights, or
        # those the batch came with); the drawn ones take a mean cross-entropy in the task loss
        self._incoming = (n_in, prev[:n_in] * (n / n_in if batch.weight is None else 1.0))
        if self.buffer.size == 0:  # the first step: nothing to replay yet
            return replace(batch, weight=torch.cat([prev.new_zeros(n_in), prev[n_in:]]))
        idx = draw(self.buffer, self.batch_size_mem or n_in)
        weight = torch.cat([prev.new_zeros(n_in), prev[n_in:], prev.new_full((len(idx),), 1 / len(idx))])
        b = self.buffer
        return Batch(torch.cat([batch.x, b.x[idx]]), torch.cat([batch.y, b.y[idx]]), torch.cat([batch.t, b.t[idx]]),
                     batch.exp, weight=weight, n_new=n_in, shares=batch.shares)

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        if self._incoming is None:
            return {}
        n, w = self._incoming
        logits, y = ctx.logits[:n], ctx.batch.y[:n]
        # the classes present in the incoming batch, found on the device (no host sync); IGNORE marks nothing
        flat = y.reshape(-1)
        present = torch.zeros(logits.shape[-1], device=logits.device).scatter_reduce(
            0, flat.clamp(min=0), (flat != IGNORE).float(), "amax") > 0
        masked = logits.masked_fill(~present, torch.finfo(logits.dtype).min)
        return {"ace": (ctx.module.objective.loss(masked, y, reduction="none") * w).sum()}

    def after_optimizer_step(self, ctx: StepContext) -> None:
        new = ctx.batch.new_samples()  # un-augmented: replayed samples are augmented afresh
        self.buffer.add(new.x, new.y, new.t)

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
