"""Shrink and perturb (Ash & Adams, 2020): scale the weights down and add init-scale noise."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Interval
from torch import Tensor, nn

from clframe.config.registry import STRATEGIES, ParamError
from clframe.core.strategy import StepContext, Strategy


@STRATEGIES.register("shrink_perturb")
class ShrinkPerturb(Strategy):
    """``theta <- shrink * theta + perturb * sigma_0 * eps``, ``eps ~ N(0, 1)``, on every trainable parameter.

    The paper adds ``perturb`` times a fresh initialisation; here the noise is a Gaussian with the
    parameter's own init scale, ``sigma_0`` = the standard deviation of its values at ``setup`` (one
    sample of its init distribution; saved in ``state_dict``). That needs no re-initialisation per
    step and keeps the noise zero-mean: parameters with a constant init (zero biases, norm scales)
    get ``sigma_0 = 0`` and are only shrunk. Without gradients, repeated steps drive a weight's
    variance to ``perturb^2 sigma_0^2 / (1 - shrink^2)``, so the defaults (0.9999, 0.01) hold the
    weights at about half their init variance on a time scale of 1e4 steps: the gentle per-step
    use of loss-of-plasticity studies. For the paper's once-per-task use, take
    ``when: experience`` with a strong shrink (e.g. ``shrink: 0.5, perturb: 0.1``).

    Args:
        shrink: factor on the weights, in [0, 1] (default 0.9999).
        perturb: noise scale relative to ``sigma_0``, at least 0 (default 0.01).
        when: ``step`` (after the optimizer step) or ``experience`` (at the start of every
            experience but the first; never on boundary-free streams) (default ``step``).
        every: apply every ``every`` optimizer steps or experiences, at least 1 (default 1).
        seed: seed of the noise generator; every rank of a multi-process run uses the same seed,
            so the weights stay identical across ranks (default 0).
    """

    def __init__(
        self,
        shrink: Annotated[float, Interval(ge=0, le=1)] = 0.9999,
        perturb: Annotated[float, Ge(0)] = 0.01,
        when: Literal["step", "experience"] = "step",
        every: Annotated[int, Ge(1)] = 1,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= shrink <= 1.0:
            raise ParamError("shrink", f"must be in [0, 1], got {shrink}", "1 disables shrinking (default 0.9999).")
        if perturb < 0:
            raise ParamError("perturb", f"must be >= 0, got {perturb}", "0 disables the noise (default 0.01).")
        if every < 1:
            raise ParamError("every", f"must be >= 1, got {every}", "Set it to 1 to apply it every time.")
        self.shrink, self.perturb, self.when, self.every, self.seed = shrink, perturb, when, every, seed
        if when == "experience":
            self.needs_boundaries = "with when=experience it acts at experience starts (when=step does not)"
        self.init_std: dict[str, Tensor] = {}
        self.gen: torch.Generator | None = None
        self._params: dict[str, nn.Parameter] = {}

    def setup(self, module: Any) -> None:
        self._params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        for n, p in self._params.items():
            if n not in self.init_std:
                self.init_std[n] = p.detach().float().std() if p.numel() > 1 else p.new_zeros((), dtype=torch.float)
        if self.gen is None and self._params:
            self.gen = torch.Generator(device=next(iter(self._params.values())).device).manual_seed(self.seed)

    @torch.no_grad()
    def apply(self) -> None:
        """Shrink and perturb every parameter once (no host sync)."""
        for n, p in self._params.items():
            noise = torch.randn(p.shape, generator=self.gen, device=p.device, dtype=p.dtype)
            p.mul_(self.shrink).add_(noise.mul_(self.perturb * self.init_std[n].to(p.dtype)))

    def after_optimizer_step(self, ctx: StepContext) -> None:
        if self.when == "step" and (ctx.step + 1) % self.every == 0:
            self.apply()

    def on_experience_start(self, exp: Any, module: Any) -> None:
        if self.when == "experience" and exp.index > 0 and exp.index % self.every == 0:
            self.apply()

    def state_dict(self) -> dict[str, Any]:
        return {"init_std": dict(self.init_std), "rng": None if self.gen is None else self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.init_std.update(state["init_std"])
        if state["rng"] is not None:
            device = next(iter(self.init_std.values())).device
            self.gen = torch.Generator(device=device)
            self.gen.set_state(state["rng"].cpu())  # generator states are CPU byte tensors, even of CUDA generators
