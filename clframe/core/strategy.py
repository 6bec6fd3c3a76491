"""The Strategy base class: a plugin that takes part in training. It receives every event of
``clframe.core.hooks.Plugin`` and adds the hooks that feed the training step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from clframe.core.hooks import Plugin, overrides
from clframe.data.batch import Batch
from clframe.errors import ConfigError

if TYPE_CHECKING:
    from clframe.core.module import CLModule

# Batch: also importable from here, as in 0.2
__all__ = ["Batch", "StepContext", "Strategy", "overrides", "refuse_without_boundaries"]


@dataclass
class StepContext:
    """What loss, optimizer and step-end hooks see.

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


class Strategy(Plugin):
    """Base class for strategies. Override only the hooks you need: the events of ``Plugin``
    (``setup``, ``on_experience_start``, ``after_optimizer_step``, ``on_experience_end``, ...)
    and the hooks below, which feed the training step.

    Hooks return values instead of mutating shared state; state lives on ``self``
    and is saved through ``state_dict``. Subclasses declare their settings as typed
    keyword arguments of ``__init__``: that signature is the config schema.

    ``needs_boundaries``: why the strategy cannot work without the experience events (e.g. "it
    computes its Fisher information at each experience end"); "" (the default) when it can. A run
    whose stream hides the boundaries refuses such a strategy (``refuse_without_boundaries``).
    """

    needs_boundaries: str = ""

    def before_forward(self, batch: Batch, module: CLModule) -> Batch:
        """Start of each step; return the batch to train on (e.g. with replayed samples)."""
        return batch

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        """Extra loss terms added to the task loss; each is logged as ``loss/<name>``."""
        return {}

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


def refuse_without_boundaries(strategies: dict[str, Strategy]) -> None:
    """Raise ``ConfigError`` for the first strategy that ``needs_boundaries``, on a stream that gives
    strategies no experience events; the message names the strategy, its reason and the setting."""
    for key, s in strategies.items():
        if s.needs_boundaries:
            raise ConfigError(
                f"strategy '{key}' needs the experience boundaries: {s.needs_boundaries}. This run gives strategies "
                "none (scenario.boundaries=hidden, or a boundary-free scenario such as label_permuted). Set "
                "scenario.boundaries=known, or use a strategy that works without them (e.g. replay with its "
                "reservoir buffer, er_ace, der, derpp).")
