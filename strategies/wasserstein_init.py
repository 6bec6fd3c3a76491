"""Wasserstein regularization towards the initial weight distribution (Lewandowski et al., 2024, v1)."""

from __future__ import annotations

from typing import Annotated, Any

import torch
from annotated_types import Ge
from clframe.strategies._penalty import FlatParams, Quadratic, sort_order
from torch import Tensor, nn

from clframe.config.registry import STRATEGIES
from clframe.core.strategy import StepContext, Strategy


def sorted_flat(w: Tensor) -> Tensor:
    """The values of ``w`` in ascending order [numel] (differentiable: the sort is a gather)."""
    return w.flatten().sort().values


@STRATEGIES.register("wasserstein_init")
class WassersteinInit(Strategy):
    """Penalty ``wasserstein_lambda * sum_l W2^2(theta_l, theta_l^0)`` (logged as ``loss/wasserstein_init``).

    Each trainable parameter tensor ``l`` is read as an empirical distribution of its ``n_l`` values.
    Between two such distributions with the same number of atoms the optimal transport matches the
    i-th smallest value to the i-th smallest, so the squared 2-Wasserstein distance is
    ``mean_i (sort(theta_l)_i - sort(theta_l^0)_i)^2``. It is zero for any permutation of the
    initial values, hence less restrictive than L2 Init (and never larger than ``||theta_l - theta_l^0||^2 / n_l``).
    ``theta^0`` are the weights at ``setup``; only their sorted values are kept (in ``state_dict``).

    The mean makes the pull on one weight ``2 * wasserstein_lambda / n_l`` times its distance to
    its matched initial value, so a strength comparable to ``l2_init``'s ``l2_lambda`` is about
    ``n_l * l2_lambda``. The form is not verified against the paper.

    Each step sorts the current weights (one sort per tensor: they differ in length) and scatters
    the sorted initial values to the positions they are matched with; the penalty is then a
    quadratic pull of every weight towards its match, with weight ``1 / n_l`` (``Quadratic``).

    Args:
        wasserstein_lambda: penalty strength (default 1.0: for layers of 1e3..1e5 weights a pull of
            1e-3..1e-5 per weight, the range of ``l2_init``).
    """

    def __init__(self, wasserstein_lambda: Annotated[float, Ge(0)] = 1.0) -> None:
        self.wasserstein_lambda = wasserstein_lambda
        self.sorted_init: dict[str, Tensor] = {}
        self._params: dict[str, nn.Parameter] = {}
        # the sorted initial weights as one flat vector, the penalty over it, and each tensor's share;
        # rebuilt when the anchor changes, so the initial weights are sorted once
        self._packed: tuple[Quadratic, list[Tensor]] | None = None

    def setup(self, module: Any) -> None:
        self._params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        for n, p in self._params.items():
            if n not in self.sorted_init or self.sorted_init[n].numel() != p.numel():
                self.sorted_init[n] = sorted_flat(p.detach()).clone()
        self._packed = None

    def _pack(self) -> tuple[Quadratic, list[Tensor]]:
        flat = FlatParams(list(self._params.values()))
        init = flat.flatten([self.sorted_init[n] for n in self._params])
        segments = list(init.split(flat.numels))
        # the tensors of sorted_init become views of the flat vector: the state is held once
        self.sorted_init.update(zip(self._params, segments))
        # the mean over each tensor's values: weight 1 / n_l on each of them
        weight = torch.cat([torch.full((n,), 1 / n) for n in flat.numels]).to(init)
        return Quadratic(flat, init, weight), segments

    def penalty(self) -> Tensor:
        """``wasserstein_lambda * sum_l mean((sort(theta_l) - sort(theta_l^0))^2)`` at the current weights."""
        if self._packed is None:
            self._packed = self._pack()
        q, segments = self._packed
        theta = q.flat.read()
        matched = torch.empty_like(theta)  # [N]: the initial value each weight is transported to
        # one sort per tensor (torch sorts no batch of different lengths), the rest over the flat vector
        for w, m, init in zip(theta.split(q.flat.numels), matched.split(q.flat.numels), segments):
            m.scatter_(0, sort_order(w), init)
        return q(self.wasserstein_lambda, anchor=matched)

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        return {"wasserstein_init": self.penalty()} if self._params else {}

    def state_dict(self) -> dict[str, Any]:
        return {"sorted_init": dict(self.sorted_init)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sorted_init.update(state["sorted_init"])
        self._packed = None
