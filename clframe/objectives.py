"""What a scenario asks the model to do: classify (cross-entropy, accuracy) or regress (squared
error). The objective gives the training loss and the per-sample score that fills the accuracy
matrix and the curves; scores are always "higher is better", so forgetting, BWT and the curve
metrics keep their meaning (for regression the score is the negative squared error)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from clframe.errors import ConfigError


@dataclass(frozen=True)
class Objective:
    """One kind of target.

    Args:
        name: ``classification`` or ``regression``.
        score_name: what the score is, for summaries and plot labels.
        online_key: the per-task row key of the online metric in the plasticity diagnostics.
    """

    name: str
    score_name: str
    online_key: str

    @property
    def regression(self) -> bool:
        return self.name == "regression"

    def loss(self, out: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        """Cross-entropy of logits ``out`` [B, C] against class labels ``y`` [B], or the squared error
        of ``out`` [B, D] against targets ``y`` [B, D] (or [B] when D is 1), averaged over D."""
        if not self.regression:
            return F.cross_entropy(out, y, reduction=reduction)
        err = (out.reshape(y.shape) - y).pow(2) if y.ndim == 1 else (out - y).pow(2).mean(-1)
        if reduction == "none":
            return err
        return err.mean() if reduction == "mean" else err.sum()

    def score(self, out: Tensor, y: Tensor) -> Tensor:
        """Per-sample score [B], higher is better: 1 for a correct class, else 0; or minus the
        squared error."""
        if self.regression:
            return -self.loss(out, y, reduction="none")
        return (out.argmax(-1) == y).float()

    def online(self, score_sum: float) -> float:
        """The online metric from a summed score: accuracy, or the (positive) squared error."""
        return -score_sum if self.regression else score_sum


OBJECTIVES = {
    "classification": Objective("classification", "accuracy", "online_acc"),
    "regression": Objective("regression", "negative mean squared error", "online_error"),
}
CLASSIFICATION = OBJECTIVES["classification"]


def get_objective(name: str) -> Objective:
    """The objective called ``name``; a ``ConfigError`` naming the valid ones otherwise."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective '{name}'; valid objectives: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
