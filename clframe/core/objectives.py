"""What a scenario asks the model to do: classify (cross-entropy, accuracy) or regress (squared
error). The objective gives the training loss and the per-sample score that fills the accuracy
matrix and the curves; scores are always "higher is better", so forgetting, BWT and the curve
metrics keep their meaning (for regression the score is the negative squared error)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from clframe.errors import ConfigError

IGNORE = -100  # a label that is not scored (padding steps); cross-entropy's ignore_index


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
        of ``out`` [B, D] against targets ``y`` [B, D] (or [B] when D is 1), averaged over D.

        Classification also takes several labels per sample: logits [B, S, C] and labels [B, S] (per
        step of a sequence, or per head); entries labelled ``IGNORE`` (-100, e.g. padding) do not
        count. A sample's loss is then the mean over its labelled entries, and ``mean`` averages
        over all labelled entries of the batch."""
        if not self.regression:
            if out.ndim == 2:
                return F.cross_entropy(out, y, reduction=reduction)
            ce = F.cross_entropy(out.transpose(1, 2), y, reduction="none")  # [B, S], 0 where IGNORE
            counted = (y != IGNORE).sum(1)
            if reduction == "none":
                return ce.sum(1) / counted.clamp(min=1)
            return ce.sum() / counted.sum().clamp(min=1) if reduction == "mean" else ce.sum()
        err = (out.reshape(y.shape) - y).pow(2) if y.ndim == 1 else (out - y).pow(2).mean(-1)
        if reduction == "none":
            return err
        return err.mean() if reduction == "mean" else err.sum()

    def score(self, out: Tensor, y: Tensor) -> Tensor:
        """Per-sample score [B], higher is better: 1 for a correct class, else 0; or minus the
        squared error."""
        if self.regression:
            return -self.loss(out, y, reduction="none")
        if out.ndim == 2:
            return (out.argmax(-1) == y).float()
        counted = y != IGNORE
        return ((out.argmax(-1) == y) & counted).sum(1) / counted.sum(1).clamp(min=1)

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


def task_loss(logits: Tensor, y: Tensor, weight: Tensor | None = None,
              objective: Objective = CLASSIFICATION) -> Tensor:
    """The objective's mean loss (default cross-entropy), or ``sum(weight * loss)`` when per-sample
    weights are given."""
    if weight is None:
        return objective.loss(logits, y)
    return (objective.loss(logits, y, reduction="none") * weight).sum()
