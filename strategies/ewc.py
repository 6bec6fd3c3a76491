"""Elastic Weight Consolidation (Kirkpatrick et al., 2017), separate and online modes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Interval
from clframe.strategies._fisher import diagonal_fisher
from clframe.strategies._penalty import FlatParams, Quadratic
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

    needs_boundaries = "it computes its Fisher information and anchor at each experience end"

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
        self._params: dict[str, torch.nn.Parameter] = {}
        # the penalty packed from the Fishers, anchors and parameters (None: no parameter anchored); stale
        # when one of them changed, then rebuilt by _pack before the next penalty
        self._packed: Quadratic | None = None
        self.fishers, self.anchors = [], []

    @property
    def fishers(self) -> list[dict[str, Tensor]]:
        """One Fisher (name -> tensor) per anchor; assigning a list re-packs the penalty."""
        return self._fishers

    @fishers.setter
    def fishers(self, value: list[dict[str, Tensor]]) -> None:
        self._fishers, self._packed, self._stale = value, None, True

    @property
    def anchors(self) -> list[dict[str, Tensor]]:
        """The weights (name -> tensor) each Fisher is anchored at; assigning a list re-packs the penalty."""
        return self._anchors

    @anchors.setter
    def anchors(self, value: list[dict[str, Tensor]]) -> None:
        self._anchors, self._packed, self._stale = value, None, True

    def setup(self, module: Any) -> None:
        self._params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        self._packed, self._stale = None, True

    def on_experience_end(self, exp: Any, module: Any) -> None:
        f = diagonal_fisher(module, exp.train, self.fisher_kind, self.fisher_batch_size, self.fisher_max_samples,
                            getattr(module, "objective", CLASSIFICATION))
        anchor = {n: p.detach().clone() for n, p in module.named_parameters() if n in f}
        if self.mode == "online" and self.fishers:
            old = self.fishers[0]
            f = {n: v + self.gamma * old[n] if n in old and old[n].shape == v.shape else v for n, v in f.items()}
            self.fishers, self.anchors = [f], [anchor]
        else:
            self.fishers, self.anchors = [*self.fishers, f], [*self.anchors, anchor]

    def _pack(self) -> Quadratic | None:
        """The penalty over the parameters some Fisher covers, read as one flat vector [N], with the Fishers
        and anchors stacked [K, N]: built once per anchor, not every step. The dicts' tensors become views
        of the stacks, so the state is held once."""
        used = {n: p for n, p in self._params.items() if any(n in f and f[n].shape == p.shape for f in self.fishers)}
        if not used:
            return None
        flat = FlatParams(list(used.values()))

        def stacked(maps: list[dict[str, Tensor]]) -> Tensor:
            # zeros where an experience did not anchor a parameter: no term, no gradient
            return torch.stack([flat.flatten([m[n] if n in f and f[n].shape == p.shape else torch.zeros_like(p)
                                              for n, p in used.items()]) for m, f in zip(maps, self.fishers)])

        fisher, anchor = stacked(self.fishers), stacked(self.anchors)
        for f, a, f_row, a_row in zip(self.fishers, self.anchors, fisher, anchor):
            for n, f_view, a_view in zip(used, flat.split(f_row), flat.split(a_row)):
                if n in f and f[n].shape == f_view.shape:
                    f[n], a[n] = f_view, a_view
        return Quadratic(flat, anchor, fisher)

    def penalty(self) -> Tensor | None:
        """The EWC penalty at the current weights, or None before the first anchor."""
        if self._stale:
            self._packed, self._stale = self._pack(), False
        return None if self._packed is None else self._packed(self.ewc_lambda)

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        pen = self.penalty()
        return {} if pen is None else {"ewc": pen}

    def state_dict(self) -> dict[str, Any]:
        return {"fishers": self.fishers, "anchors": self.anchors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fishers, self.anchors = [dict(f) for f in state["fishers"]], [dict(a) for a in state["anchors"]]
