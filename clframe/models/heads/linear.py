"""Linear classification heads: one shared head, or one head per task label."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from clframe.config.registry import HEADS
from clframe.models.init import init_linear


@HEADS.register("linear")
class LinearHead(nn.Module):
    """One linear layer over all classes (class- and domain-incremental); ignores task labels.

    Args:
        in_features: backbone output width (supplied).
        n_classes: number of classes (supplied).
        n_tasks: number of task labels (supplied, unused).
        init: ``default`` (``nn.Linear``'s own) or ``kaiming`` (``kaiming_uniform_`` with the linear
            gain, zero bias: the loss-of-plasticity reference's output layer) (default ``default``).
    """

    def __init__(self, in_features: int, n_classes: int, n_tasks: int = 1,
                 init: Literal["default", "kaiming"] = "default") -> None:
        super().__init__()
        self.fc = init_linear(nn.Linear(in_features, n_classes), init)

    def forward(self, h: Tensor, t: Tensor) -> Tensor:
        return self.fc(h)


@HEADS.register("multihead")
class MultiHead(nn.Module):
    """One linear head per task label (task-incremental).

    Each sample is classified by the head of its task label (or, with task labels [B, K], by K
    heads: a multi-head curriculum scores each sequence with every trained head), among that task's classes
    only (the others are masked out once the module tells the head which classes a task
    has, via ``set_task_classes``). All heads are one batched matmul, so there is no
    per-task Python loop.

    Args:
        in_features: backbone output width (supplied).
        n_classes: number of classes (supplied).
        n_tasks: number of task labels (supplied).
    """

    def __init__(self, in_features: int, n_classes: int, n_tasks: int) -> None:
        super().__init__()
        self.n_tasks, self.n_classes = n_tasks, n_classes
        self.weight = nn.Parameter(torch.empty(n_tasks * n_classes, in_features))
        self.bias = nn.Parameter(torch.empty(n_tasks * n_classes))
        for w, b in zip(self.weight.view(n_tasks, n_classes, -1), self.bias.view(n_tasks, n_classes)):
            layer = nn.Linear(in_features, n_classes)  # same init as one nn.Linear per task
            w.data.copy_(layer.weight.data)
            b.data.copy_(layer.bias.data)
        self.register_buffer("class_mask", torch.ones(n_tasks, n_classes, dtype=torch.bool))

    def set_task_classes(self, task: int, classes: list[int]) -> None:
        """Restrict task ``task`` to ``classes``."""
        self.class_mask[task] = False
        self.class_mask[task, classes] = True

    def forward(self, h: Tensor, t: Tensor) -> Tensor:
        """Logits [B, n_classes] of each sample's head ``t`` [B]; with ``t`` [B, K], of K heads per
        sample, [B, K, n_classes] (the features are computed once and read by every head)."""
        logits = nn.functional.linear(h, self.weight, self.bias).view(len(h), self.n_tasks, self.n_classes)
        tt = t.view(len(h), -1)  # [B, K]
        idx = tt.unsqueeze(-1).expand(-1, -1, self.n_classes)
        out = logits.gather(1, idx)  # [B, K, n_classes]
        out = out.masked_fill(~self.class_mask[tt], torch.finfo(out.dtype).min)
        return out if t.ndim == 2 else out.squeeze(1)
