"""Gradient Episodic Memory (Lopez-Paz & Ranzato, NeurIPS 2017)."""

from __future__ import annotations

import warnings
from typing import Annotated, Any

import torch
from annotated_types import Ge
from torch import Tensor

from clframe.config.registry import STRATEGIES
from clframe.core.objectives import CLASSIFICATION
from clframe.core.strategy import StepContext, Strategy
from clframe.errors import ConfigError
from clframe.run.distributed import world_size


@STRATEGIES.register("gem")
class GEM(Strategy):
    """Keep ``patterns_per_exp`` samples of every past experience; after each backward pass take the
    gradient ``g_k`` of the loss on each past experience's memory, and if the update would raise any of
    those losses (``g · g_k < 0`` for some k), replace ``g`` by the closest gradient that does not:
    ``g~ = Gᵀv* + g`` with ``v*`` the solution of the dual quadratic program
    ``min_v ½ vᵀGGᵀv + gᵀGᵀv  s.t. v ≥ γ`` (``γ`` = ``memory_strength``, the paper's margin).

    The QP is solved on the host by ``quadprog`` through ``qpsolvers`` (the kept solver the authors' code
    uses), in float64, with the authors' ``1e-3`` ridge on ``GGᵀ``: one host transfer per step with a past
    experience, which is why GEM is slower than the other baselines. Checked against the authors' code
    (facebookresearch/GradientEpisodicMemory, ``model/gem.py``) and Avalanche 0.6's ``GEMPlugin``, which
    follow the same QP. As in Avalanche (and unlike the authors' task-incremental code, which masks the
    other tasks' logits), the memory losses use every output: the class-incremental form. The memory of an
    experience is a random subset of its training data, drawn at its end.

    Args:
        patterns_per_exp: samples kept per experience (default 256, the paper's memory per task).
        memory_strength: the margin γ of the QP, favouring backward transfer (default 0.5, the paper's code).
        seed: seed of the memory draws (default 0).
    """

    needs_boundaries = "it fills its per-experience memories at each experience end"

    def __init__(self, patterns_per_exp: Annotated[int, Ge(1)] = 256,
                 memory_strength: Annotated[float, Ge(0)] = 0.5, seed: int = 0) -> None:
        self.patterns_per_exp, self.memory_strength, self.seed = patterns_per_exp, memory_strength, seed
        self.memory: list[tuple[Tensor, Tensor, Tensor]] = []

    def setup(self, module: Any) -> None:
        if getattr(module, "objective", CLASSIFICATION).regression:
            raise ConfigError("strategy gem is a classification method (its memories are labelled samples of past "
                              "classes); this scenario is a regression one. Use replay or ewc instead.")
        if world_size() > 1:
            raise ConfigError("strategy gem solves its quadratic program per process and would let the ranks' "
                              "gradients diverge; run it on one process (trainer.devices=1).")
        import qpsolvers  # noqa: F401  (a missing solver is named before training, not at the first projection)

        if "quadprog" not in qpsolvers.available_solvers:
            raise ConfigError("strategy gem needs the quadprog solver: pip install quadprog==0.1.14 (pinned in "
                              "clframe's pyproject.toml).")

    def on_experience_end(self, exp: Any, module: Any) -> None:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + exp.index)
        idx = torch.randperm(len(exp.train), generator=g)[: self.patterns_per_exp].to(exp.train.y.device)
        self.memory.append(tuple(v[idx].to(module.device) for v in (exp.train.x, exp.train.y, exp.train.t)))

    def before_optimizer_step(self, ctx: StepContext) -> None:
        if not self.memory:
            return
        module = ctx.module
        params = [p for p in module.parameters() if p.requires_grad]
        rows = []
        for x, y, t in self.memory:
            loss = module.objective.loss(module(x, t), y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            rows.append(torch.cat([(gk if gk is not None else torch.zeros_like(p)).reshape(-1)
                                   for gk, p in zip(grads, params)]))
        G = torch.stack(rows)  # [past experiences, parameters]
        g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        if not bool((G @ g < 0).any()):  # a host sync: the QP runs on the host anyway
            return
        projected = self._project(G, g).to(g.device, g.dtype)
        start = 0
        for p in params:
            if p.grad is not None:
                p.grad.copy_(projected[start: start + p.numel()].view_as(p))
            start += p.numel()

    def _project(self, G: Tensor, g: Tensor) -> Tensor:
        """``Gᵀv* + g`` for the dual QP's solution ``v*`` (the authors' formulation, via qpsolvers)."""
        import numpy as np
        import qpsolvers

        mem, grad = G.detach().double().cpu().numpy(), g.detach().double().cpu().numpy()
        t = mem.shape[0]
        P = mem @ mem.T
        P = 0.5 * (P + P.T) + np.eye(t) * 1e-3
        q = mem @ grad
        v = qpsolvers.solve_qp(P=P, q=q, G=-np.eye(t), h=-np.full(t, self.memory_strength), solver="quadprog")
        if v is None:  # the solver failed: keep the unprojected gradient rather than stop training
            warnings.warn("gem: the quadratic program had no solution at this step; the gradient was not projected.",
                          stacklevel=2)
            return g
        return torch.from_numpy(v @ mem + grad)

    def state_dict(self) -> dict[str, Any]:
        return {"memory": [list(m) for m in self.memory]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory = [tuple(m) for m in state["memory"]]
