"""Continual backprop (Dohare et al., 2021; 2024): generate-and-test over the hidden units of an MLP or a CNN."""

from __future__ import annotations

import math
from functools import partial
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Interval
from clframe.strategies._cbp_units import Unit, find_units
from torch import Tensor, nn

from clframe.config.registry import STRATEGIES, ParamError
from clframe.core.strategy import StepContext, Strategy
from clframe.errors import ConfigError
from clframe.models.init import activation_gain
from clframe.run.distributed import all_reduce_sum, world_size


@STRATEGIES.register("continual_backprop")
class ContinualBackprop(Strategy):
    """Replace a few mature, low-utility hidden units by fresh ones after every optimizer step.

    A hidden unit is an output row of a Linear followed by an activation, its outgoing weights a
    column of the next Linear; or an output channel of a Conv2d followed by an activation, its
    outgoing weights the input-channel slice ``weight[:, c]`` of the next Conv2d or, after a
    Flatten, the ``in_features / C`` columns of channel c of the next Linear (see
    ``clframe.strategies._cbp_units.find_units``). Per unit, with ``h`` the activations of the step's last
    training-mode forward (for a channel: at the activation, before any pooling), and the means
    over the batch (and the spatial positions) and over the weights of the unit:
    ``f = eta f + (1-eta) mean(h)``, ``u = eta u + (1-eta) new_u`` with, using the
    bias-corrected ``f / (1 - eta^age)``, ``new_u = mean|w_out| * mean|h - f| / mean|w_in|``
    (``adaptable_contribution``) or ``mean|w_out| * mean|h|`` (``contribution``). Units with
    ``age > maturity`` are ranked by ``u / (1 - eta^age)``; ``replacement_rate * n_eligible``
    of the lowest are replaced per layer, the fraction carried over steps. A replaced unit gets
    input weights (a row, or a channel's kernel) drawn from ``U(-b, b)``, the layer's init: with
    ``init=default`` ``b = 1/sqrt(fan_in)`` (what the default init of ``nn.Linear`` and ``nn.Conv2d``
    draws), with ``init=kaiming`` ``b = gain * sqrt(3/fan_in)``, the gain of the unit's activation
    (the reference's kaiming-uniform; pair it with ``backbone.init=kaiming``), bias 0, outgoing weights 0,
    age/u/f 0, and every optimizer state tensor shaped like its parameter (SGD ``momentum_buffer``,
    Adam ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``) zeroed at its entries. Torch keeps one Adam
    ``step`` per tensor, so it cannot be reset per entry as the reference does: the reset entries
    keep the tensor's step count, and without the bias correction their updates under a steady
    gradient are up to ~6.6x lr (default betas, about 12 steps after the reset), fading over
    ~1/(1-beta2) steps. New weights are drawn on the CPU from the strategy's own generator (the
    same on every device; copied to the device only when units are replaced). Under multi-process
    training the statistics are averaged over ranks.

    Args:
        replacement_rate: fraction of the eligible units replaced per step (default 1e-4).
        maturity: steps a unit is protected after it is (re)initialised (default 100).
        eta: decay of the running means of activation and utility (default 0.99).
        utility: ``adaptable_contribution`` or ``contribution`` (default ``adaptable_contribution``).
        seed: seed of the new units' weights (default 0).
        init: the new units' input-weight range, ``default`` or ``kaiming`` (default ``default``).
    """

    def __init__(
        self,
        replacement_rate: Annotated[float, Interval(ge=0, le=1)] = 1e-4,
        maturity: Annotated[int, Ge(0)] = 100,
        eta: Annotated[float, Interval(ge=0, lt=1)] = 0.99,
        utility: Literal["adaptable_contribution", "contribution"] = "adaptable_contribution",
        seed: int = 0,
        init: Literal["default", "kaiming"] = "default",
    ) -> None:
        if not 0.0 <= replacement_rate <= 1.0:
            raise ParamError("replacement_rate", f"must be in [0, 1], got {replacement_rate}")
        if not 0.0 <= eta < 1.0:
            raise ParamError("eta", f"must be in [0, 1), got {eta}")
        self.rate, self.maturity, self.eta, self.utility = replacement_rate, maturity, eta, utility
        self.gen = torch.Generator().manual_seed(seed)
        self.init = init
        self.layers: list[Unit] = []
        self.ages: list[Tensor] = []
        self.util: list[Tensor] = []
        self.mean: list[Tensor] = []
        self._handles: list[Any] = []

    def setup(self, module: nn.Module) -> None:
        for h in self._handles:
            h.remove()
        self.layers = find_units(module)
        if not self.layers:
            raise ConfigError("continual_backprop found no (Linear, activation module, Linear) in the model, nor "
                              "(Conv2d, activation module, Conv2d or Flatten and Linear): it replaces feed-forward "
                              "units, and recurrent backbones (gru, lstm, tau_rnn) have none. Use backbone=mlp, or "
                              "another strategy with a recurrent backbone.")
        zeros = [torch.zeros(u.size, device=u.layer.weight.device) for u in self.layers]
        self.ages = [z.long() for z in zeros]
        self.util, self.mean = [z.clone() for z in zeros], [z.clone() for z in zeros]
        n = len(self.layers)
        # host-side: the carried fraction, steps seen, and [step, count] of the replacements that are
        # not mature yet (the units present at setup count as replaced at step 0), so the number of
        # eligible units is known without reading the ages from the device
        self.carry, self.steps, self.replaced = [0.0] * n, [0] * n, [0] * n
        self.recent = [[[0, u.size]] for u in self.layers]
        self._acts: list[Tensor | None] = [None] * n
        self._handles = [u.act.register_forward_hook(partial(self._capture, i)) for i, u in enumerate(self.layers)]

    def _capture(self, i: int, mod: nn.Module, inp: Any, out: Tensor) -> None:
        if mod.training:  # evaluation and Fisher passes run in eval mode
            self._acts[i] = out.detach()

    def after_optimizer_step(self, ctx: StepContext) -> None:
        opt = ctx.module.optimizer
        for i, unit in enumerate(self.layers):
            h, self._acts[i] = self._acts[i], None
            if h is not None:
                idx = self._test(i, h.float(), unit)  # h: [..., n] or [B, C, H, W]
                if idx is not None:
                    self._generate(i, idx, unit, opt)

    @torch.no_grad()
    def _test(self, i: int, h: Tensor, unit: Unit) -> Tensor | None:
        """Update ages, means and utilities of layer ``i``; the units to replace, or None."""
        eta = self.eta
        self.ages[i] += 1
        correction = 1 - eta ** self.ages[i].float()  # [n]
        # the units' dim of h: the last for a Linear, the channels (-3) for a Conv2d
        dim = h.dim() - unit.layer.weight.dim() + 1
        self.mean[i].mul_(eta).add_(_global_mean(_unit_mean(h, dim)), alpha=1 - eta)
        w_out = _unit_mean(unit.outgoing(unit.nxt.weight.detach()).abs(), 1).float()  # [n]
        if self.utility == "contribution":
            new = w_out * _global_mean(_unit_mean(h.abs(), dim))
        else:
            f = (self.mean[i] / correction).view([-1 if d == dim else 1 for d in range(h.dim())])
            spread = _global_mean(_unit_mean((h - f).abs(), dim))
            new = w_out * spread / _unit_mean(unit.layer.weight.detach().abs(), 0).float()
        self.util[i].mul_(eta).add_(new, alpha=1 - eta)
        self.steps[i] += 1
        t = self.steps[i]
        self.recent[i] = [[s, c] for s, c in self.recent[i] if t - s <= self.maturity]
        n_eligible = unit.size - sum(c for _, c in self.recent[i])
        self.carry[i] += self.rate * n_eligible
        # the tolerance keeps e.g. 0.2 + 0.4 + 0.4 from landing just below 1
        k = min(int(self.carry[i] + 1e-9), n_eligible)
        if k < 1:
            return None
        self.carry[i] -= k
        self.recent[i].append([t, k])
        self.replaced[i] += k
        score = torch.where(self.ages[i] > self.maturity, self.util[i] / correction, torch.inf)
        return score.topk(k, largest=False).indices

    @torch.no_grad()
    def _generate(self, i: int, idx: Tensor, unit: Unit, opt: Any) -> None:
        """Re-initialise units ``idx`` of layer ``i`` and reset their statistics and optimizer state."""
        w = unit.layer.weight  # [n, in] or [C, in / groups, kh, kw]
        gain = activation_gain(unit.act) * math.sqrt(3) if self.init == "kaiming" else 1.0
        bound = gain / math.sqrt(w[0].numel())
        new = torch.empty(len(idx), *w.shape[1:]).uniform_(-bound, bound, generator=self.gen)
        w.index_copy_(0, idx, new.to(w))
        if unit.layer.bias is not None:
            unit.layer.bias.index_fill_(0, idx, 0.0)
        unit.outgoing(unit.nxt.weight).index_fill_(1, idx, 0.0)
        for stat in (self.ages[i], self.util[i], self.mean[i]):
            stat.index_fill_(0, idx, 0)
        state = {} if opt is None else opt.state
        for p, out in ((w, False), (unit.layer.bias, False), (unit.nxt.weight, True)):
            for v in state.get(p, {}).values():
                if isinstance(v, Tensor) and v.shape == p.shape:  # not Adam's scalar step
                    (unit.outgoing(v) if out else v).index_fill_(int(out), idx, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"layers": [name for name, *_ in self.layers], "ages": [a.clone() for a in self.ages],
                "util": [u.clone() for u in self.util], "mean": [f.clone() for f in self.mean],
                "carry": list(self.carry), "steps": list(self.steps), "replaced": list(self.replaced),
                "recent": [[list(r) for r in rs] for rs in self.recent], "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [name for name, *_ in self.layers]
        if state["layers"] != names:
            raise ValueError(f"continual_backprop state is for layers {state['layers']}, the model has {names}")
        dev = [u.layer.weight.device for u in self.layers]
        self.ages = [a.to(d).clone() for a, d in zip(state["ages"], dev)]
        self.util = [u.to(d).clone() for u, d in zip(state["util"], dev)]
        self.mean = [f.to(d).clone() for f, d in zip(state["mean"], dev)]
        self.carry, self.steps, self.replaced = list(state["carry"]), list(state["steps"]), list(state["replaced"])
        self.recent = [[list(r) for r in rs] for rs in state["recent"]]
        self.gen.set_state(state["rng"].cpu())


def _global_mean(x: Tensor) -> Tensor:
    """``x`` averaged over ranks, so every rank scores and replaces the same units."""
    return all_reduce_sum(x) / world_size() if world_size() > 1 else x


def _unit_mean(x: Tensor, dim: int) -> Tensor:
    """``x`` averaged over every dim but ``dim``: one value per unit."""
    return x.mean([d for d in range(x.dim()) if d != dim])
