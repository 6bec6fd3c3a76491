"""Continual backprop (Dohare et al., 2021; 2024): generate-and-test over the hidden units of an MLP."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn

from clframe.distributed import all_reduce_sum, world_size
from clframe.plugin import StepContext, Strategy
from clframe.registry import STRATEGIES, ParamError

# modules allowed between a unit's activation and the next Linear (they do not mix units)
PASS_THROUGH = (nn.Dropout, nn.AlphaDropout, nn.Identity)


def is_activation(m: nn.Module) -> bool:
    """A parameter-free module from ``torch.nn.modules.activation`` (ReLU, Tanh, GELU, ...)."""
    return type(m).__module__ == "torch.nn.modules.activation" and not any(True for _ in m.parameters())


def find_units(model: nn.Module) -> list[tuple[str, nn.Linear, nn.Module, nn.Linear]]:
    """``(name, linear, activation, next_linear)`` for every hidden layer of ``model``.

    Walks the leaf modules in registration order (the forward order of an ``nn.Sequential``
    and of backbone-then-head): a Linear, then an activation module, then any dropout or
    identity, then a Linear whose ``in_features`` is the first one's ``out_features`` (e.g. the
    head's). Activations applied as functions (``torch.relu(x)``) are not seen.
    """
    leaves = [(n, m) for n, m in model.named_modules(remove_duplicate=False) if next(m.children(), None) is None]
    out = []
    for i, (name, lin) in enumerate(leaves[:-2]):
        act = leaves[i + 1][1]
        if not isinstance(lin, nn.Linear) or not is_activation(act):
            continue
        j = i + 2
        while j < len(leaves) and isinstance(leaves[j][1], PASS_THROUGH):
            j += 1
        nxt = leaves[j][1] if j < len(leaves) else None
        if isinstance(nxt, nn.Linear) and nxt.in_features == lin.out_features:
            if any(act is a for _, _, a, _ in out):
                raise ValueError(f"continual_backprop: activation module after '{name}' is shared by two layers; "
                                 "give every hidden layer its own activation module")
            out.append((name, lin, act, nxt))
    return out


@STRATEGIES.register("continual_backprop")
class ContinualBackprop(Strategy):
    """Replace a few mature, low-utility hidden units by fresh ones after every optimizer step.

    A hidden unit is an output row of a Linear followed by an activation; its outgoing weights
    are a column of the next Linear (see ``find_units``; conv layers are not covered). Per unit,
    with ``h`` the activations of the step's last training-mode forward:
    ``f = eta f + (1-eta) mean(h)``, ``u = eta u + (1-eta) new_u`` with, using the
    bias-corrected ``f / (1 - eta^age)``, ``new_u = mean|w_out| * mean|h - f| / mean|w_in|``
    (``adaptable_contribution``) or ``mean|w_out| * mean|h|`` (``contribution``). Units with
    ``age > maturity`` are ranked by ``u / (1 - eta^age)``; ``replacement_rate * n_eligible``
    of the lowest are replaced per layer, the fraction carried over steps. A replaced unit gets
    input weights drawn from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (what ``nn.Linear``'s default
    init draws), bias 0, outgoing weights 0, age/u/f 0, and every optimizer state tensor shaped
    like its parameter (SGD ``momentum_buffer``, Adam ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``)
    zeroed at its entries. Torch keeps one Adam ``step`` per tensor, so it cannot be reset per entry
    as the reference does: the reset entries keep the tensor's step count, and without the bias
    correction their updates under a steady gradient are up to ~6.6x lr (default betas, about 12
    steps after the reset), fading over ~1/(1-beta2) steps. New weights are drawn on the CPU from
    the strategy's own generator (the same on every device; copied to the device only when units
    are replaced). Under multi-process training the statistics are averaged over ranks.

    Args:
        replacement_rate: fraction of the eligible units replaced per step (default 1e-4).
        maturity: steps a unit is protected after it is (re)initialised (default 100).
        eta: decay of the running means of activation and utility (default 0.99).
        utility: ``adaptable_contribution`` or ``contribution`` (default ``adaptable_contribution``).
        seed: seed of the new units' weights (default 0).
    """

    def __init__(
        self,
        replacement_rate: float = 1e-4,
        maturity: int = 100,
        eta: float = 0.99,
        utility: Literal["adaptable_contribution", "contribution"] = "adaptable_contribution",
        seed: int = 0,
    ) -> None:
        if not 0.0 <= replacement_rate <= 1.0:
            raise ParamError("replacement_rate", f"must be in [0, 1], got {replacement_rate}")
        if not 0.0 <= eta < 1.0:
            raise ParamError("eta", f"must be in [0, 1), got {eta}")
        if maturity < 0:
            raise ParamError("maturity", f"must be >= 0, got {maturity}")
        self.rate, self.maturity, self.eta, self.utility = replacement_rate, maturity, eta, utility
        self.gen = torch.Generator().manual_seed(seed)
        self.layers: list[tuple[str, nn.Linear, nn.Module, nn.Linear]] = []
        self.ages: list[Tensor] = []
        self.util: list[Tensor] = []
        self.mean: list[Tensor] = []
        self._handles: list[Any] = []

    def setup(self, module: nn.Module) -> None:
        for h in self._handles:
            h.remove()
        self.layers = find_units(module)
        if not self.layers:
            raise ValueError("continual_backprop found no (Linear, activation module, Linear) in the model")
        zeros = [torch.zeros(lin.out_features, device=lin.weight.device) for _, lin, _, _ in self.layers]
        self.ages = [z.long() for z in zeros]
        self.util, self.mean = [z.clone() for z in zeros], [z.clone() for z in zeros]
        n = len(self.layers)
        # host-side: the carried fraction, steps seen, and [step, count] of the replacements that are
        # not mature yet (the units present at setup count as replaced at step 0), so the number of
        # eligible units is known without reading the ages from the device
        self.carry, self.steps, self.replaced = [0.0] * n, [0] * n, [0] * n
        self.recent = [[[0, lin.out_features]] for _, lin, _, _ in self.layers]
        self._acts: list[Tensor | None] = [None] * n
        self._handles = [act.register_forward_hook(partial(self._capture, i))
                         for i, (_, _, act, _) in enumerate(self.layers)]

    def _capture(self, i: int, mod: nn.Module, inp: Any, out: Tensor) -> None:
        if mod.training:  # evaluation and Fisher passes run in eval mode
            self._acts[i] = out.detach()

    def after_optimizer_step(self, ctx: StepContext) -> None:
        opt = getattr(ctx.module, "_optimizer", None)
        for i, (_, lin, _, nxt) in enumerate(self.layers):
            h, self._acts[i] = self._acts[i], None
            if h is not None:
                idx = self._test(i, h.flatten(0, -2).float(), lin, nxt)  # h: [B, n]
                if idx is not None:
                    self._generate(i, idx, lin, nxt, opt)

    @torch.no_grad()
    def _test(self, i: int, h: Tensor, lin: nn.Linear, nxt: nn.Linear) -> Tensor | None:
        """Update ages, means and utilities of layer ``i``; the units to replace, or None."""
        eta = self.eta
        self.ages[i] += 1
        correction = 1 - eta ** self.ages[i].float()  # [n]
        self.mean[i].mul_(eta).add_(_global_mean(h.mean(0)), alpha=1 - eta)
        w_out = nxt.weight.detach().abs().mean(0).float()  # [n]
        if self.utility == "contribution":
            new = w_out * _global_mean(h.abs().mean(0))
        else:
            spread = _global_mean((h - self.mean[i] / correction).abs().mean(0))
            new = w_out * spread / lin.weight.detach().abs().mean(1).float()
        self.util[i].mul_(eta).add_(new, alpha=1 - eta)
        self.steps[i] += 1
        t = self.steps[i]
        self.recent[i] = [[s, c] for s, c in self.recent[i] if t - s <= self.maturity]
        n_eligible = lin.out_features - sum(c for _, c in self.recent[i])
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
    def _generate(self, i: int, idx: Tensor, lin: nn.Linear, nxt: nn.Linear, opt: Any) -> None:
        """Re-initialise units ``idx`` of layer ``i`` and reset their statistics and optimizer state."""
        bound = 1 / math.sqrt(lin.in_features)
        w = torch.empty(len(idx), lin.in_features).uniform_(-bound, bound, generator=self.gen)
        lin.weight.index_copy_(0, idx, w.to(lin.weight))
        if lin.bias is not None:
            lin.bias.index_fill_(0, idx, 0.0)
        nxt.weight.index_fill_(1, idx, 0.0)
        for stat in (self.ages[i], self.util[i], self.mean[i]):
            stat.index_fill_(0, idx, 0)
        state = {} if opt is None else opt.state
        for p, dim in ((lin.weight, 0), (lin.bias, 0), (nxt.weight, 1)):
            for v in state.get(p, {}).values():
                if isinstance(v, Tensor) and v.shape == p.shape:  # not Adam's scalar step
                    v.index_fill_(dim, idx, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"layers": [name for name, *_ in self.layers], "ages": [a.clone() for a in self.ages],
                "util": [u.clone() for u in self.util], "mean": [f.clone() for f in self.mean],
                "carry": list(self.carry), "steps": list(self.steps), "replaced": list(self.replaced),
                "recent": [[list(r) for r in rs] for rs in self.recent], "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [name for name, *_ in self.layers]
        if state["layers"] != names:
            raise ValueError(f"continual_backprop state is for layers {state['layers']}, the model has {names}")
        dev = [lin.weight.device for _, lin, _, _ in self.layers]
        self.ages = [a.to(d).clone() for a, d in zip(state["ages"], dev)]
        self.util = [u.to(d).clone() for u, d in zip(state["util"], dev)]
        self.mean = [f.to(d).clone() for f, d in zip(state["mean"], dev)]
        self.carry, self.steps, self.replaced = list(state["carry"]), list(state["steps"]), list(state["replaced"])
        self.recent = [[list(r) for r in rs] for rs in state["recent"]]
        self.gen.set_state(state["rng"].cpu())


def _global_mean(x: Tensor) -> Tensor:
    """``x`` averaged over ranks, so every rank scores and replaces the same units."""
    return all_reduce_sum(x) / world_size() if world_size() > 1 else x
