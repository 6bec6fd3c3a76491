"""The hypernetwork output regulariser (von Oswald et al., 2020)."""

from __future__ import annotations

from typing import Annotated, Any

import torch
from annotated_types import Ge
from clframe.strategies._lookahead import optimizer_step
from torch import Tensor

from clframe.config.registry import STRATEGIES, ParamError
from clframe.core.strategy import StepContext, Strategy
from clframe.errors import ConfigError
from clframe.models.protocols import GeneratesWeights, Grows


@STRATEGIES.register("hnet_reg")
class HnetReg(Strategy):
    """Keep the weights a hypernetwork generates for earlier tasks where they were.

    At each experience start the weights of every earlier task are generated and detached as
    targets; each step adds ``beta / K * sum_k ||h(e_k, Theta*) - h(e_k, Theta + dTheta)||^2``
    over the K regularised tasks, in one hypernetwork call for all of them. The task
    embeddings of earlier tasks are inputs only (frozen); the current one trains on the task
    loss alone (``CLModule`` freezes the others), as with the reference's two optimizers.

    Args:
        beta: regularisation strength (default 0.1, the paper's split/permuted MNIST value).
        lookahead: regularise at ``Theta + dTheta``, ``dTheta`` the step the optimizer would take
            on the task loss alone (detached); costs one extra backward of the task loss
            (default False).
        lookahead_sgd: make ``dTheta = -lr * grad`` instead of simulating the optimizer (default False).
        reg_tasks: earlier tasks drawn at random, without replacement, each step; None: all
            (default None).
        grow_units: with ``hypernet=hnet_rnn``: recurrent units added at an experience end when the
            regulariser is not met (default 0: never grow).
        grow_tolerance: the regulariser is met when the mean squared change of the earlier tasks'
            generated weights is at most this (default 1e-4).
        seed: seed of the task subsampling (default 0).
    """

    needs_boundaries = "it records the hypernetwork's outputs for the past tasks at each experience start"

    def __init__(self, beta: Annotated[float, Ge(0)] = 0.1, lookahead: bool = False, lookahead_sgd: bool = False,
                 reg_tasks: Annotated[int, Ge(1)] | None = None, grow_units: Annotated[int, Ge(0)] = 0,
                 grow_tolerance: Annotated[float, Ge(0)] = 1e-4, seed: int = 0) -> None:
        if reg_tasks is not None and reg_tasks < 1:
            raise ParamError("reg_tasks", f"must be >= 1, got {reg_tasks}",
                             "Set null to regularise every earlier task.")
        self.beta, self.lookahead, self.lookahead_sgd = beta, lookahead, lookahead_sgd
        self.reg_tasks, self.grow_units, self.grow_tolerance, self.seed = reg_tasks, grow_units, grow_tolerance, seed
        self.past: Tensor | None = None  # [K] task labels of the earlier tasks
        self.targets: Tensor | None = None  # [K, P] their weights at the experience start
        self.growth: list[dict[str, Any]] = []
        self.gen: torch.Generator | None = None

    def setup(self, module: Any) -> None:
        if not isinstance(module.model, GeneratesWeights):
            raise ConfigError("strategy 'hnet_reg' regularises a hypernetwork's outputs, and this run has none. "
                              "Add hypernet=hnet_mlp or hypernet=hnet_rnn.")
        if self.grow_units and not isinstance(module.model.core.generator, Grows):
            raise ConfigError("'strategies.hnet_reg.grow_units' needs a hypernetwork that can grow (hypernet="
                              "hnet_rnn); set it to 0 for this one.")
        self.gen = torch.Generator(device=module.device).manual_seed(self.seed)

    def on_experience_start(self, exp: Any, module: Any) -> None:
        hn, current = module.model, exp.task_label
        earlier = sorted({e.task_label for e in module.stream.experiences[: exp.index]} - {current})
        if not earlier:
            self.past = self.targets = None
            return
        self.past = torch.tensor(earlier, device=module.device)
        with torch.no_grad():
            self.targets = hn.generate(self.past).detach()

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        if self.past is None or self.beta == 0:
            return {}
        hn = ctx.module.model
        past, targets = self.past, self.targets
        if self.reg_tasks is not None and self.reg_tasks < len(past):
            pick = torch.randperm(len(past), generator=self.gen, device=past.device)[: self.reg_tasks]
            past, targets = past[pick], targets[pick]
        delta = self._lookahead(ctx) if self.lookahead else None
        w = hn.generate(past, delta=delta, detach_emb=True)  # [K, P], one call for all earlier tasks
        return {"hnet_reg": self.beta * (w - targets).pow(2).sum(1).mean()}

    def _lookahead(self, ctx: StepContext) -> dict[str, Tensor]:
        params = {n: p for n, p in ctx.module.model.theta() if p.requires_grad}
        grads = torch.autograd.grad(ctx.loss, list(params.values()), retain_graph=True, allow_unused=True)
        grads = {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(params.items(), grads)}
        return optimizer_step(ctx.module.optimizer, params, grads, sgd=self.lookahead_sgd)

    def on_experience_end(self, exp: Any, module: Any) -> None:
        if not self.grow_units or self.past is None:
            return
        hn = module.model
        with torch.no_grad():
            change = float((hn.generate(self.past) - self.targets).pow(2).mean())
        if change <= self.grow_tolerance:
            return
        hn.core.generator.grow(self.grow_units)
        module.refresh_optimizer_params()
        self.growth.append({"experience": exp.index, "change": change, "hidden_size": hn.core.generator.hidden_size})

    def state_dict(self) -> dict[str, Any]:
        return {"past": self.past, "targets": self.targets, "growth": self.growth,
                "gen": None if self.gen is None else self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.past, self.targets, self.growth = state["past"], state["targets"], list(state["growth"])
        if state["gen"] is not None and self.gen is not None:
            self.gen.set_state(state["gen"].cpu())
