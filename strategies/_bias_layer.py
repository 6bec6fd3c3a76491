"""BiC's bias correction layer: ``α o + β`` on the logits of some classes, and its fit (stage 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def class_mask(classes: list[int], n_classes: int, device: torch.device | str) -> Tensor:
    """A bool mask [n_classes], True at ``classes``: built once, so that a step indexes no host list."""
    mask = torch.zeros(n_classes, dtype=torch.bool, device=device)
    mask[classes] = True
    return mask


def correct(logits: Tensor, bias: Tensor, mask: Tensor) -> Tensor:
    """``logits`` [B, C] with ``bias[0] * o + bias[1]`` in the columns where ``mask`` [C] is True, the
    others unchanged."""
    return torch.where(mask, logits * bias[0] + bias[1], logits)


class BiasCorrected(nn.Module):
    """``model(x, t)``'s logits through ``correct``: the model BiC evaluates."""

    def __init__(self, model: nn.Module, bias: Tensor, mask: Tensor) -> None:
        super().__init__()
        self.model, self.bias, self.mask = model, bias, mask

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return correct(self.model(x, t), self.bias, self.mask)


def fit_bias(logits: Tensor, y: Tensor, mask: Tensor, epochs: int, lr: float, batch_size: int,
             gen: torch.Generator | None = None, beta_decay: float = 0.1) -> Tensor:
    """Fit ``(α, β)`` from ``(1, 0)`` by cross-entropy of ``correct(logits)`` against ``y``: SGD with
    momentum 0.9, ``epochs`` shuffled passes in batches of ``batch_size``, the learning rate divided by 10
    at 1/4, 1/2 and 3/4 of the epochs, plus ``beta_decay β² / 2`` (the authors' code). ``logits`` are the
    frozen model's, computed once. Returns the fitted ``[α, β]`` (no host sync)."""
    p = torch.tensor([1.0, 0.0], device=logits.device, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [epochs // 4, epochs // 2, 3 * epochs // 4], gamma=0.1)
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in torch.randperm(len(y), generator=gen, device=y.device).split(batch_size):
                loss = F.cross_entropy(correct(logits[idx], p, mask), y[idx]) + beta_decay * p[1] ** 2 / 2
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
    return p.detach()
