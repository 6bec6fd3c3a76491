"""The Strategy base class: every hook a no-op, with the contract of each."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from clframe.core.module import CLModule
    from clframe.data.stream import Experience


@dataclass
class Batch:
    """One training batch.

    Args:
        x: inputs [B, ...].
        y: class labels [B].
        t: task labels [B].
        exp: index of the experience the batch belongs to.
        weight: optional per-sample loss weights [B]; the task loss is then
            ``sum(weight * ce)`` instead of ``mean(ce)``.
        n_new: how many leading samples are from the stream (the rest were added by
            strategies, e.g. replay); ``None`` means all of them.
        shares: under multi-process training, how many of this step's stream samples each rank
            holds, in rank order (their sum is the global batch; a rank whose share is 0 holds a
            repeated sample that only keeps it in step); ``None`` in one process.
    """

    x: Tensor
    y: Tensor
    t: Tensor
    exp: int
    weight: Tensor | None = None
    n_new: int | None = None
    shares: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.y)

    def new_samples(self) -> Batch:
        """The part of the batch that came from the stream."""
        n = len(self) if self.n_new is None else self.n_new
        return replace(self, x=self.x[:n], y=self.y[:n], t=self.t[:n], weight=None, n_new=None)


@dataclass
class StepContext:
    """What loss and optimizer hooks see.

    Args:
        module: the ``CLModule`` being trained.
        batch: the batch after every ``before_forward``.
        logits: model output [B, n_classes].
        loss: the task loss (a scalar tensor).
        step: global optimizer step (never restarts).
        experience: index of the current experience.
        loglik: each sample's one-step predictive log-likelihood [B], taken before the update,
            when the head computes it (a Bayesian head such as ``kalman``); None otherwise.
    """

    module: CLModule
    batch: Batch
    logits: Tensor
    loss: Tensor
    step: int
    experience: int
    loglik: Tensor | None = None


class Strategy:
    """Base class for strategies (plugins). Override only the hooks you need.

    Hooks return values instead of mutating shared state; state lives on ``self``
    and is saved through ``state_dict``. Subclasses declare their settings as typed
    keyword arguments of ``__init__``: that signature is the config schema.
    """

    def setup(self, module: CLModule) -> None:
        """Once, before training. ``module``: the CLModule (parameters exist, on device)."""

    def on_experience_start(self, exp: Experience, module: CLModule) -> None:
        """Before the first batch of ``exp``. Not called on boundary-free streams."""

    def before_forward(self, batch: Batch, module: CLModule) -> Batch:
        """Start of each step; return the batch to train on (e.g. with replayed samples)."""
        return batch

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        """Extra loss terms added to the task loss; each is logged as ``loss/<name>``."""
        return {}

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Gradients are ready (unscaled); e.g. project or mask them."""

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """After the optimizer step; e.g. add to a buffer, update EMA weights."""

    def on_experience_end(self, exp: Experience, module: CLModule) -> None:
        """After the last batch of ``exp``; e.g. compute importances. Not called on boundary-free streams."""

    def configure_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer | None:
        """Return an optimizer over ``params`` to replace the configured one, or None."""
        return None

    def lr_factor(self, step: int, experience: int, step_in_experience: int, experience_steps: int) -> float | None:
        """Multiplier for the base learning rate at ``step``, or None to leave it alone."""
        return None

    def eval_model(self, module: CLModule) -> nn.Module | None:
        """The model to evaluate instead of ``module`` (e.g. averaged weights), or None.
        It is called as ``model(x, t)`` and must return logits, like ``module``."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain containers that restore this strategy's state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


def overrides(strategy: Strategy, hook: str) -> bool:
    """True if ``strategy`` overrides ``hook``, so the module can skip no-op calls."""
    return getattr(type(strategy), hook) is not getattr(Strategy, hook)
