"""The step an optimizer would take, computed without taking it (the regulariser's look-ahead)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def optimizer_step(opt: torch.optim.Optimizer, params: dict[str, nn.Parameter], grads: dict[str, Tensor],
                   sgd: bool = False) -> dict[str, Tensor]:
    """``dTheta`` per name: what ``opt`` would add to each parameter for ``grads``, its state untouched.

    Adam and AdamW are simulated from their moments (bias-corrected, as ``torch.optim.Adam``
    without amsgrad; weight decay left out), SGD from its momentum buffer; any other optimizer,
    or ``sgd=True``, gives ``-lr * grad`` (the reference's ``use_sgd_change``).

    Args:
        opt: the optimizer that holds ``params``.
        params: name -> parameter.
        grads: name -> gradient of the task loss alone.
        sgd: use the plain gradient step whatever the optimizer (default False).
    """
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    out = {}
    for name, p in params.items():
        g, group = grads[name], group_of[id(p)]
        lr, state = group["lr"], opt.state.get(p, {})
        if not sgd and isinstance(opt, torch.optim.Adam | torch.optim.AdamW):
            b1, b2 = group["betas"]
            step = float(state["step"]) + 1 if "step" in state else 1.0
            m = b1 * state["exp_avg"] + (1 - b1) * g if "exp_avg" in state else (1 - b1) * g
            v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g if "exp_avg_sq" in state else (1 - b2) * g * g
            denom = (v / (1 - b2 ** step)).sqrt_().add_(group["eps"])
            out[name] = -lr * (m / (1 - b1 ** step)) / denom
        elif not sgd and isinstance(opt, torch.optim.SGD) and group["momentum"] and "momentum_buffer" in state:
            buf = group["momentum"] * state["momentum_buffer"] + (1 - group["dampening"]) * g
            out[name] = -lr * (g + group["momentum"] * buf if group["nesterov"] else buf)
        else:
            out[name] = -lr * g
    return out
