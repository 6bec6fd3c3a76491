"""Diagonal Fisher information, shared by importance-based strategies."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from clframe.core.objectives import CLASSIFICATION, Objective
from clframe.data.stream import TensorData
from clframe.run.distributed import all_reduce_sum, rank, world_size


def diagonal_fisher(
    model: nn.Module,
    data: TensorData,
    kind: Literal["empirical", "per_sample"] = "empirical",
    batch_size: int = 32,
    max_samples: int | None = None,
    objective: Objective = CLASSIFICATION,
) -> dict[str, Tensor]:
    """Diagonal Fisher of ``model(x, t)`` with the true labels, in eval mode.

    Args:
        model: maps ``(x, t)`` to logits; its trainable parameters are the keys.
        data: samples to estimate on (an experience's training data).
        kind: ``empirical``: mean over minibatches of the squared minibatch-mean
            gradient (Avalanche's estimate; it scales like 1/batch_size);
            ``per_sample``: mean over samples of the squared per-sample gradient
            (the textbook empirical Fisher, independent of batch size) (default ``empirical``).
        batch_size: minibatch size (default 32).
        max_samples: use only the first ``max_samples`` samples (default: all).
        objective: the loss whose gradients are squared: cross-entropy, or for regression the squared
            error (a Gaussian likelihood up to a constant factor) (default classification).

    Under multi-process training each rank estimates on every ``world_size``-th sample and
    the sums are reduced across ranks, so every rank gets the same Fisher of all the samples.

    Recurrent models: cuDNN's RNN backward refuses eval mode, so cuDNN is off during the estimate
    (PyTorch's own RNN kernels run instead, on the same weights). ``torch.func.vmap`` has no
    batching rule for the fused ``nn.GRU``/``nn.LSTM``/``nn.RNN`` ops, so for a model with one,
    ``per_sample`` takes one backward pass per sample: the same quantity, computed more slowly.
    """
    if kind == "per_sample" and any(isinstance(m, nn.RNNBase) for m in model.modules()):
        kind, batch_size = "empirical", 1  # minibatches of one: the mean squared per-sample gradient
    with torch.backends.cudnn.flags(enabled=False):
        return _fisher(model, data, kind, batch_size, max_samples, objective)


def _fisher(model: nn.Module, data: TensorData, kind: str, batch_size: int, max_samples: int | None,
            objective: Objective) -> dict[str, Tensor]:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    n = len(data) if max_samples is None else min(max_samples, len(data))
    ws = world_size()
    if ws > 1:
        data = data.subset(torch.arange(rank(), n, ws, device=data.y.device))
        n = len(data)
    was_training = model.training
    model.eval()  # no dropout noise, frozen BatchNorm statistics
    if kind == "per_sample":
        buffers = dict(model.named_buffers())

        def loss_one(p: dict[str, Tensor], x: Tensor, y: Tensor, t: Tensor) -> Tensor:
            logits = functional_call(model, (p, buffers), (x.unsqueeze(0), t.unsqueeze(0)))
            return objective.loss(logits, y.unsqueeze(0))

        per_sample_grad = vmap(grad(loss_one), in_dims=(None, 0, 0, 0))
        detached = {k: v.detach() for k, v in params.items()}
    count = 0
    for i in range(0, n, batch_size):
        s = slice(i, min(i + batch_size, n))
        x, y, t = data.x[s], data.y[s], data.t[s]
        if kind == "per_sample":
            for k, g in per_sample_grad(detached, x, y, t).items():
                fisher[k] += g.pow(2).sum(0)
            count += len(y)
        else:
            grads = torch.autograd.grad(objective.loss(model(x, t), y), list(params.values()), allow_unused=True)
            for k, g in zip(params, grads):
                if g is not None:
                    fisher[k] += g.pow(2)
            count += 1
    model.train(was_training)
    if ws > 1:
        for v in fisher.values():
            all_reduce_sum(v)
        count = int(all_reduce_sum(torch.tensor([count], device=next(iter(fisher.values())).device)).item())
    return {k: v / max(count, 1) for k, v in fisher.items()}
