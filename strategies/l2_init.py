"""L2 Init (Kumar et al., 2023): pull every parameter back towards its initial value."""

from __future__ import annotations

from typing import Annotated, Any

import torch
from annotated_types import Ge
from clframe.strategies._penalty import FlatParams, Quadratic
from torch import Tensor, nn

from clframe.config.registry import STRATEGIES
from clframe.core.strategy import StepContext, Strategy


@STRATEGIES.register("l2_init")
class L2Init(Strategy):
    """Penalty ``l2_lambda * sum ||theta - theta_0||^2`` over every trainable parameter (logged as
    ``loss/l2_init``), ``theta_0`` being the weights at ``setup`` (saved in ``state_dict``).

    Unlike weight decay, which pulls towards 0, this keeps the weights near a point that is known to
    be trainable. Parameters that did not exist (or had another shape) at ``setup`` are anchored at
    their value when ``setup`` next sees them.

    Args:
        l2_lambda: penalty strength; the paper tunes it per benchmark, and the default is a moderate
            value (not the paper's): with SGD at lr 0.05 it takes 1e-4 of the distance to the
            initial weights back per step (default 1e-3).
    """

    def __init__(self, l2_lambda: Annotated[float, Ge(0)] = 1e-3) -> None:
        self.l2_lambda = l2_lambda
        self.init: dict[str, Tensor] = {}
        self._params: dict[str, nn.Parameter] = {}
        # the penalty over all parameters read as one flat vector; rebuilt when the anchor changes
        self._packed: Quadratic | None = None

    def setup(self, module: Any) -> None:
        self._params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        for n, p in self._params.items():
            if n not in self.init or self.init[n].shape != p.shape:
                self.init[n] = p.detach().clone()
        self._packed = None

    def _pack(self) -> Quadratic:
        """The anchor flattened once (not every step); ``init``'s tensors become views of it, so it is held once."""
        flat = FlatParams(list(self._params.values()))
        anchor = flat.flatten([self.init[n] for n in self._params])
        self.init.update(zip(self._params, flat.split(anchor)))
        return Quadratic(flat, anchor)

    def penalty(self) -> Tensor:
        """``l2_lambda * sum ||theta - theta_0||^2`` at the current weights."""
        if not self._params:
            return torch.zeros(())
        if self._packed is None:
            self._packed = self._pack()
        return self._packed(self.l2_lambda)

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        return {"l2_init": self.penalty()} if self._params else {}

    def state_dict(self) -> dict[str, Any]:
        return {"init": dict(self.init)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.init.update(state["init"])
        self._packed = None
