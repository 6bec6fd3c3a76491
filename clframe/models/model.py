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


def features_of(model: nn.Module, x: Tensor) -> Tensor:
    """The features ``model``'s backbone gives for inputs ``x``, after the model's ``preprocess`` if it
    has one (a strategy that reads features, e.g. iCaRL's class means, must see normalised images)."""
    pre = getattr(model, "preprocess", None)
    return model.backbone(x if pre is None else pre(x))


class Model(Generic, nn.Module):
    """``head(backbone(preprocess(x)), t)``.

    Args:
        backbone: maps inputs to features.
        head: maps ``(features, task labels)`` to outputs; a head that ``LearnsOnline`` scores each
            batch and updates itself after the optimizer step.
        preprocess: what the inputs go through first, e.g. ``clframe.models.preprocess.Normalize``
            for uint8 images (default None: the inputs as they are).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, preprocess: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.preprocess = preprocess
        self._online: tuple[nn.Module, bool] | None = None

    def features(self, x: Tensor) -> Tensor:
        """The backbone's features of inputs ``x`` (after ``preprocess``)."""
        return features_of(self, x)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.head(self.features(x), t)

    def _learns_online(self) -> bool:
        # isinstance against a runtime-checkable Protocol walks its attributes (~40 us): once per head
        if self._online is None or self._online[0] is not self.head:
            self._online = (self.head, isinstance(self.head, LearnsOnline))
        return self._online[1]

    def step(self, x: Tensor, y: Tensor, t: Tensor, weight: Tensor | None,
             objective: Objective) -> tuple[Tensor, Tensor, Tensor | None]:
        if self._learns_online():
            return self.head.online_step(self.features(x), y, t, weight)
        return super().step(x, y, t, weight, objective)

    def after_update(self) -> None:
        if self._learns_online():
            self.head.observe()
