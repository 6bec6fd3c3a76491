"""The model ``CLModule`` trains: ``head(backbone(x), t)``, or a hypernetwork that generates it.

Both satisfy ``Trainable``: a forward pass, and ``step``/``after_update``, through which a head
that learns by itself (``LearnsOnline``) takes part without the training loop knowing it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from clframe.core.objectives import Objective, task_loss
from clframe.models.protocols import LearnsOnline


@runtime_checkable
class Trainable(Protocol):
    """What ``CLModule`` trains."""

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """Logits (or outputs) for inputs ``x`` with task labels ``t``."""

    def step(self, x: Tensor, y: Tensor, t: Tensor, weight: Tensor | None,
             objective: Objective) -> tuple[Tensor, Tensor, Tensor | None]:
        """One training step's forward: logits, the task loss and, when the model computes it,
        each sample's predictive log-likelihood (else None)."""

    def after_update(self) -> None:
        """After the optimizer step."""


class Generic:
    """``step`` and ``after_update`` of a model whose loss is the objective's on its forward."""

    def step(self, x: Tensor, y: Tensor, t: Tensor, weight: Tensor | None,
             objective: Objective) -> tuple[Tensor, Tensor, Tensor | None]:
        logits = self(x, t)
        return logits, task_loss(logits, y, weight, objective), None

    def after_update(self) -> None:
        pass


class Model(Generic, nn.Module):
    """``head(backbone(x), t)``.

    Args:
        backbone: maps inputs to features.
        head: maps ``(features, task labels)`` to outputs; a head that ``LearnsOnline`` scores each
            batch and updates itself after the optimizer step.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self._online: tuple[nn.Module, bool] | None = None

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.head(self.backbone(x), t)

    def _learns_online(self) -> bool:
        # isinstance against a runtime-checkable Protocol walks its attributes (~40 us): once per head
        if self._online is None or self._online[0] is not self.head:
            self._online = (self.head, isinstance(self.head, LearnsOnline))
        return self._online[1]

    def step(self, x: Tensor, y: Tensor, t: Tensor, weight: Tensor | None,
             objective: Objective) -> tuple[Tensor, Tensor, Tensor | None]:
        if self._learns_online():
            return self.head.online_step(self.backbone(x), y, t, weight)
        return super().step(x, y, t, weight, objective)

    def after_update(self) -> None:
        if self._learns_online():
            self.head.observe()
