"""Elastic Weight Consolidation (Kirkpatrick et al., 2017), separate and online modes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Interval
from clframe.strategies._fisher import diagonal_fisher
from torch import Tensor

from clframe.config.registry import STRATEGIES
from clframe.core.objectives import CLASSIFICATION
from clframe.core.strategy import StepContext, Strategy


@STRATEGIES.register("ewc")
class EWC(Strategy):
    """Penalty ``ewc_lambda * sum F * (theta - theta_star)^2`` (no 1/2, as in Avalanche).

    ``separate`` keeps one (Fisher, anchor) pair per past experience; ``online`` keeps
    ``F = gamma * F_old + F_new`` anchored at the latest weights only. Parameters that
    did not exist (or changed shape) when an anchor was taken are skipped.

    Args:
        ewc_lambda: penalty strength (default 100.0).
        mode: ``separate`` or ``online`` (default ``separate``).
        gamma: decay of the old Fisher in online mode, in [0, 1] (default 1.0).
        fisher: ``empirical`` (squared minibatch gradients; scales like 1/fisher_batch_size)
            or ``per_sample`` (squared per-sample gradients) (default ``empirical``).
        fisher_batch_size: minibatch size for the Fisher pass (default 32).
        fisher_max_samples: cap on samples used for the Fisher (default: all).
    """

    def __init__(
        self,
        ewc_lambda: Annotated[float, Ge(0)] = 100.0,
        mode: Literal["separate", "online"] = "separate",
        gamma: Annotated[float, Interval(ge=0, le=1)] = 1.0,
        fisher: Literal["empirical", "per_sample"] = "empirical",
        fisher_batch_size: Annotated[int, Ge(1)] = 32,
        fisher_max_samples: Annotated[int, Ge(1)] | None = None,
    ) -> None:
        self.ewc_lambda, self.mode, self.gamma = ewc_lambda, mode, gamma
        self.fisher_kind, self.fisher_batch_size = fisher, fisher_batch_size
        self.fisher_max_samples = fisher_max_samples
        self.fishers: list[dict[str, Tensor]] = []
        self.anchors: list[dict[str, Tensor]] = []
        self._params: dict[str, torch.nn.Parameter] = {}

    def setup(self, module: Any) -> None:
        self._params = {n: p for n, p in module.named_parameters() if p.requires_grad}

    def on_experience_end(self, exp: Any, module: Any) -> None:
        f = diagonal_fisher(module, exp.train, self.fisher_kind, self.fisher_batch_size, self.fisher_max_samples,
                            getattr(module, "objective", CLASSIFICATION))
        anchor = {n: p.detach().clone() for n, p in module.named_parameters() if n in f}
        if self.mode == "online" and self.fishers:
            old = self.fishers[0]
            f = {n: v + self.gamma * old[n] if n in old and old[n].shape == v.shape else v for n, v in f.items()}
            self.fishers, self.anchors = [f], [anchor]
        else:
            self.fishers.append(f)
            self.anchors.append(anchor)

    def penalty(self) -> Tensor | None:
        """The EWC penalty at the current weights, or None before the first anchor."""
        if not self.fishers:
            return None
        total = None
        for f, anchor in zip(self.fishers, self.anchors):
            for n, p in self._params.items():
                if n in f and f[n].shape == p.shape:
                    term = (f[n] * (p - anchor[n]).pow(2)).sum()
                    total = term if total is None else total + term
        return None if total is None else self.ewc_lambda * total

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        pen = self.penalty()
        return {} if pen is None else {"ewc": pen}

    def state_dict(self) -> dict[str, Any]:
        return {"fishers": self.fishers, "anchors": self.anchors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fishers, self.anchors = list(state["fishers"]), list(state["anchors"])
