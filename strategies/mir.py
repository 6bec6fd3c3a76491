"""MIR (Aljundi et al., 2019): experience replay of the stored samples a virtual step would hurt most."""

from __future__ import annotations

from typing import Any

import torch
from clframe.strategies._logit_buffer import check_replay_setup, draw
from torch import Tensor
from torch.func import functional_call

from clframe.config.registry import STRATEGIES, ParamError
from clframe.core.objectives import task_loss
from clframe.core.strategy import StepContext, Strategy
from clframe.data.batch import Batch
from clframe.data.buffers import ReservoirBuffer
from clframe.errors import ConfigError
from clframe.run.distributed import rank, world_size


@STRATEGIES.register("mir")
class MIR(Strategy):
    """ER-MIR: at each step, ``subsample`` candidates drawn (without replacement) from a reservoir buffer
    of past samples are scored by how much a virtual SGD step on the incoming batch raises their loss,
    ``loss(θ_v) - loss(θ)`` with ``θ_v = θ - lr ∇L(B)`` (``lr`` the optimizer's current learning rate;
    the optimizer's state is not touched), and the ``batch_size_mem`` highest join the incoming batch:
    ``loss = CE(B) + CE(chosen)``, each a mean. The buffer takes every incoming sample, at every step, by
    reservoir sampling; replay starts as soon as it holds a sample. No experience boundary is used
    (task-free, the paper's Algorithm 1), so it runs on boundary-free streams too.

    Aljundi, Caccia, Belilovsky, Caccia, Lin, Charlin, Tuytelaars, "Online Continual Learning with
    Maximal Interfered Retrieval", NeurIPS 2019. Checked against the paper's code
    (optimass/Maximally_Interfered_Retrieval, ``mir.py: retrieve_replay_update``, ``er_main.py``) and
    Avalanche 0.6 (``avalanche.training.plugins.MIRPlugin``). Where they depart from the paper, this
    follows the paper:
    - The paper's code replays only from the second task on (``rehearse=task>0``) and draws candidates
      from the other tasks' samples only (``exclude_task=task``); its split-MNIST script also scores
      against stored logits (``--compare_to_old_logits``), a variant the paper does not describe.
    - Avalanche's buffer is class-balanced and filled at the end of each experience with all of it;
      replay starts at the second experience, and the candidates leave out the classes of the last
      batch of the previous experience; the candidates are consecutive batches of a shuffled loader that
      cycles through the buffer. Its ``subsample`` defaults to 200; the paper's code uses 50.
    The candidates are scored in eval mode (no dropout, BatchNorm statistics untouched), so that the
    two forward passes differ by the virtual step alone; the paper's code and Avalanche score in train
    mode (the same for their MLPs). The chosen samples join the incoming batch in one forward pass
    (identical without batch-statistics layers); the virtual step's gradient is the incoming batch's
    task loss alone (Avalanche's is the total, with other strategies' terms), taken with an extra
    forward pass in train mode (BatchNorm statistics see the incoming batch twice) and
    ``torch.autograd.grad``. ``lr`` is the one the previous step used (a strategy's ``lr_factor`` is
    applied after this hook).

    Args:
        mem_size: buffer capacity in samples, at least 1 (default 200).
        subsample: candidates drawn from the buffer per step, at least ``batch_size_mem`` (all the buffer
            holds when fewer) (default 50, the paper's code).
        batch_size_mem: candidates replayed per step, at least 1 (default 10, the paper's code).
        seed: seed of the buffer's insertion and draws (default 0).

    Under multi-process training every rank keeps its own buffer of ``mem_size`` samples of what it
    trained on (seed ``seed + 7919 rank``), and takes its virtual step on its part of the batch.
    Refused on a regression objective, beside another strategy that rewrites the batch (``replay``,
    ``der``, ``er_ace``), and with a hypernetwork on a stream of several tasks (its batch must hold one task).
    """

    def __init__(self, mem_size: int = 200, subsample: int = 50, batch_size_mem: int = 10, seed: int = 0) -> None:
        if mem_size < 1:
            raise ParamError("mem_size", f"must be >= 1, got {mem_size}: the buffer needs room for at least one "
                             "sample", "Set it to the number of samples to keep (default 200).")
        if batch_size_mem < 1:
            raise ParamError("batch_size_mem", f"must be >= 1, got {batch_size_mem}: a retrieval of no samples "
                             "replays nothing", "Set it to the samples replayed per step (default 10), or use "
                             "strategy=naive to train without replay.")
        if subsample < batch_size_mem:
            raise ParamError("subsample", f"must be >= batch_size_mem ({batch_size_mem}), got {subsample}: MIR "
                             "replays batch_size_mem of the subsample candidates", "Raise subsample (the paper's "
                             "code: 50 candidates for 10 replayed) or lower batch_size_mem.")
        self.subsample, self.batch_size_mem = subsample, batch_size_mem
        self.buffer = ReservoirBuffer(mem_size, seed)

    def setup(self, module: Any) -> None:
        if module.objective.regression:
            raise ConfigError("strategy 'mir' is defined for classification (the paper scores candidates by "
                              "their cross-entropy), but this scenario's objective is regression. Use "
                              "strategy=replay (or der, derpp) for replay on a regression scenario.")
        if module.optimizer is None:
            raise ConfigError("strategy 'mir' takes a virtual step on the model's trainable parameters, but this "
                              "model has none (no optimizer). Use strategy=naive with a head that learns by itself.")
        check_replay_setup(module, self)
        if world_size() > 1:  # a buffer per rank, each with its own sampling stream
            self.buffer.seed += 7919 * rank()

    def retrieve(self, batch: Batch, module: Any) -> Tensor:
        """Buffer indices of the ``batch_size_mem`` drawn candidates whose loss a virtual SGD step on
        ``batch`` raises most (all of them when fewer), on the buffer's device, without a host sync."""
        model, objective, b = module.model, module.objective, self.buffer
        cand = draw(b, self.subsample)
        params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        loss = task_loss(model(batch.x, batch.t), batch.y, batch.weight, objective)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        lr = module.optimizer.param_groups[0]["lr"]
        x, y, t = b.x[cand], b.y[cand], b.t[cand]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                virtual = {k: p if g is None else p - lr * g for (k, p), g in zip(params.items(), grads)}
                before = objective.loss(model(x, t), y, reduction="none")
                after = objective.loss(functional_call(model, virtual, (x, t)), y, reduction="none")
        finally:
            model.train(was_training)
        return cand[torch.topk(after - before, min(self.batch_size_mem, len(cand))).indices]

    def before_forward(self, batch: Batch, module: Any) -> Batch:
        if self.buffer.size == 0:  # the first step: nothing to replay yet
            return batch
        idx = self.retrieve(batch, module)
        n, k, b = len(batch), len(idx), self.buffer
        prev = batch.weight if batch.weight is not None else torch.full((n,), 1 / n, device=batch.y.device)
        # the paper's code backpropagates the two mean losses one after the other: their sum
        weight = torch.cat([prev, prev.new_full((k,), 1 / k)])
        return Batch(torch.cat([batch.x, b.x[idx]]), torch.cat([batch.y, b.y[idx]]), torch.cat([batch.t, b.t[idx]]),
                     batch.exp, weight=weight, n_new=n, shares=batch.shares)

    def after_optimizer_step(self, ctx: StepContext) -> None:
        new = ctx.batch.new_samples()
        self.buffer.add(new.x, new.y, new.t)

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
