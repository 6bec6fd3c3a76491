"""Synaptic Intelligence (Zenke, Poole & Ganguli, ICML 2017): importance from the path integral of the loss."""

from __future__ import annotations

from typing import Annotated, Any

import torch
from annotated_types import Ge, Gt
from clframe.strategies._penalty import FlatParams, Quadratic
from torch import Tensor

from clframe.config.registry import STRATEGIES
from clframe.core.strategy import StepContext, Strategy


@STRATEGIES.register("si")
class SI(Strategy):
    """Penalty ``si_lambda * sum_k Omega_k (theta_k - theta*_k)^2`` (Zenke et al. 2017, Eq. 4).

    Every step ``omega += -g * delta`` (Eq. 3's path integral, discretised as in the authors'
    reference code ganguli-lab/pathint, ``protocols.py``): ``g`` is the gradient of the loss without the
    SI penalty (their ``unreg_grads``) and ``delta`` the parameter change the optimizer actually made. At
    each experience end ``Omega = max(0, Omega + omega / (Delta^2 + xi))`` (Eq. 5), ``Delta`` the change
    over the whole experience, then ``omega`` restarts and ``theta*`` becomes the current weights. The
    ``max(0, .)`` is the authors' code's (a ``relu``; Eq. 5 does not show it): a negative importance would
    push weights away from their anchor. Everything is one flat vector on the device: two foreach
    copies and two fused multiply-adds per step, no host sync.

    Checked against Avalanche 0.6 (``SynapticIntelligencePlugin``), which departs from the paper in
    ways this class does not follow: it uses the gradient of the total loss, SI penalty included;
    clips Omega at 0.001 from above and not at 0 from below; halves the penalty (``si_lambda / 2``); defaults to
    ``eps = 1e-7``; and leaves out BatchNorm parameters. Here ``g`` excludes only this strategy's own
    penalty: other strategies' loss terms (replay's samples, LwF's distillation) are part of the loss
    whose path SI integrates; ``g`` is read before any clipping, at ``before_optimizer_step``, so a
    strategy placed before SI that changes the gradients there (A-GEM's projection) changes ``g``.

    Args:
        si_lambda: ``c``, the penalty strength, >= 0 (default 1.0).
        xi: damping ``xi`` of Eq. 5, > 0 (default 0.1, the authors' permuted-MNIST setting).
    """

    needs_boundaries = "it consolidates its path integral at each experience end"

    def __init__(self, si_lambda: Annotated[float, Ge(0)] = 1.0, xi: Annotated[float, Gt(0)] = 0.1) -> None:
        self.si_lambda, self.xi = si_lambda, xi
        self.flat: FlatParams | None = None
        self.penalty_fn: Quadratic | None = None
        # [N] each, in the flat order of the trainable parameters: the running path integral, the
        # importance, the anchor theta*, the weights at the experience start; and per-step scratch
        self.omega = self.importance = self.anchor = self.start = self.prev = self.grad = torch.empty(0)
        self.consolidated = False  # a host flag: no penalty (and nothing to subtract) before the first end
        self._pending: dict[str, Any] | None = None

    def setup(self, module: Any) -> None:
        self.flat = FlatParams([p for p in module.parameters() if p.requires_grad])
        theta = self.flat.read()
        self.omega, self.importance = torch.zeros_like(theta), torch.zeros_like(theta)
        self.anchor, self.start = theta.clone(), theta.clone()
        self.prev, self.grad = torch.zeros_like(theta), torch.zeros_like(theta)
        # the anchor and importance are updated in place, so one Quadratic serves the whole run
        self.penalty_fn = Quadratic(self.flat, self.anchor, self.importance)
        self.consolidated = False
        if self._pending is not None:
            self.load_state_dict(self._pending)

    def on_experience_start(self, exp: Any, module: Any) -> None:
        self.start.copy_(self.flat.read())
        self.omega.zero_()

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        if not self.consolidated:
            return {}
        return {"si": self.penalty_fn(self.si_lambda)}

    @torch.no_grad()
    def before_optimizer_step(self, ctx: StepContext) -> None:
        with_grad = [(v, p.grad) for v, p in zip(self.flat.split(self.grad), self.flat.params) if p.grad is not None]
        if len(with_grad) < len(self.flat.params):
            self.grad.zero_()  # a parameter outside this step's graph (another task's head) moved by nothing
        if with_grad:
            torch._foreach_copy_(*map(list, zip(*with_grad)))
        torch._foreach_copy_(self.flat.split(self.prev), self.flat.params)
        if self.consolidated:
            # the task-loss gradient: take away the penalty's own, 2 c Omega (theta - theta*)
            self.grad.addcmul_(self.importance, self.prev - self.anchor, value=-2 * self.si_lambda)

    @torch.no_grad()
    def after_optimizer_step(self, ctx: StepContext) -> None:
        # -g * (theta_new - theta_old) = g * (theta_old - theta_new)
        self.omega.addcmul_(self.grad, self.prev.sub_(self.flat.read()))

    @torch.no_grad()
    def on_experience_end(self, exp: Any, module: Any) -> None:
        theta = self.flat.read()
        self.importance.add_(self.omega / ((theta - self.start) ** 2 + self.xi)).clamp_(min=0)
        self.anchor.copy_(theta)
        self.omega.zero_()
        self.consolidated = True

    def state_dict(self) -> dict[str, Any]:
        return {"omega": self.omega, "importance": self.importance, "anchor": self.anchor, "start": self.start,
                "consolidated": self.consolidated}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.flat is None:  # loaded before setup: applied there
            self._pending = state
            return
        for key in ("omega", "importance", "anchor", "start"):
            getattr(self, key).copy_(state[key])
        self.consolidated, self._pending = bool(state["consolidated"]), None
