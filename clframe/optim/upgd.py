"""UPGD: utility-based perturbed gradient descent (Elsayed & Mahmood, 2024), first-order utility."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor

# F.normalize's epsilon: the smallest norm a row of utilities is divided by (local scaling)
NORM_EPS = 1e-12


class UPGD(torch.optim.Optimizer):
    """Gradient steps gated by each weight's utility, with gated noise.

    Per weight, with gradient ``g`` and weight ``w`` before the step (``t``: the weight's
    step count)::

        u     = beta_utility * u + (1 - beta_utility) * (-g * w)      # signed first-order utility
        u_hat = u / (1 - beta_utility^t)                              # bias-corrected
        s     = sigmoid(u_hat / eta)                   scaling="global"
        s     = sigmoid(normalize(u_hat))              scaling="local"
        w     = (1 - lr * wd) * w - lr * (g + xi) * (1 - s)           protect=True
        w     = (1 - lr * wd) * w - lr * (g + xi * (1 - s))           protect=False
        xi    ~ N(0, sigma^2)

    Weight decay is decoupled and multiplied by ``lr``; every parameter with a gradient,
    biases included, is updated.

    ``eta`` (global scaling) is the largest utility over every parameter of every group
    with global scaling. ``eta_from="uncorrected"`` takes it from ``u``, as the authors'
    code does; ``"corrected"`` takes it from ``u_hat``, as the paper writes it. With equal
    step counts the corrected choice makes ``u_hat / eta = u / max u`` (the bias correction
    cancels), while the uncorrected one divides by ``1 - beta_utility^t`` once more, so early
    steps saturate ``s`` towards 1 (the high-utility weights barely move at first). ``eta``
    stays on the device: no host sync per step.

    Guard: the update has no epsilon, and ``eta <= 0`` (no weight has positive utility,
    e.g. all-zero gradients) would divide by zero or flip the sign of the scaling. ``eta``
    is clamped to the smallest positive normal number of the parameter dtype, the limit
    ``eta -> 0+``: ``s = 0`` for negative utilities (no protection: the full gradient step
    and noise) and ``s = 0.5`` for zero utilities. Weights stay finite.

    Local normalisation: ``normalize`` divides ``u_hat`` by its L2 norm (at least 1e-12,
    as ``F.normalize``) over every dim but the first: per row (output unit) of a linear
    weight ``[out, in]`` (the authors' ``F.normalize(u_hat, dim=-1)``), per output filter
    of a conv kernel ``[out, in, kh, kw]`` (not per kernel row), and over the whole vector
    of a bias (or of a 0-d parameter).

    Noise: drawn from torch's global RNG (seeded by the run, saved in clframe checkpoints)
    as one ``torch.randn`` of all the elements of each (param group, device, dtype)
    bucket, split in parameter order; ``sigma=0`` draws nothing.

    State per parameter: ``step`` (int) and ``utility`` (a tensor like the parameter),
    so ``state_dict`` holds only tensors and plain values.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (default 0.01).
        weight_decay: decoupled weight decay, multiplied by ``lr`` (default 0.0).
        beta_utility: decay of the utility average, in [0, 1) (default 0.999).
        sigma: standard deviation of the noise (default 0.001).
        protect: ``True`` gates gradient and noise by ``1 - s`` (the paper's "protecting"
            UPGD); ``False`` gates the noise only (default True).
        scaling: ``global`` (divide by the network-wide maximum ``eta``) or ``local``
            (normalise each parameter) (default ``global``).
        eta_from: ``uncorrected`` (the maximum of ``u``, the authors' code) or ``corrected``
            (the maximum of ``u_hat``, the paper) (default ``uncorrected``).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        weight_decay: float = 0.0,
        beta_utility: float = 0.999,
        sigma: float = 0.001,
        protect: bool = True,
        scaling: Literal["global", "local"] = "global",
        eta_from: Literal["uncorrected", "corrected"] = "uncorrected",
    ) -> None:
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not 0 <= beta_utility < 1:
            raise ValueError(f"beta_utility must be in [0, 1), got {beta_utility}")
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        if scaling not in ("global", "local"):
            raise ValueError(f"scaling must be 'global' or 'local', got {scaling!r}")
        if eta_from not in ("uncorrected", "corrected"):
            raise ValueError(f"eta_from must be 'uncorrected' or 'corrected', got {eta_from!r}")
        defaults = dict(lr=lr, weight_decay=weight_decay, beta_utility=beta_utility, sigma=sigma, protect=protect,
                        scaling=scaling, eta_from=eta_from)
        super().__init__(params, defaults)

    def _buckets(self) -> list[tuple[dict[str, Any], list[Tensor], list[Tensor], list[Tensor], list[float]]]:
        """(group, params, grads, utilities, bias corrections) per (group, device, dtype);
        creates the state of new parameters and counts the step of each."""
        buckets = []
        for group in self.param_groups:
            beta = group["beta_utility"]
            by_key: dict[tuple[torch.device, torch.dtype], tuple[list, list, list, list]] = {}
            for p in group["params"]:
                if p.grad is None or p.numel() == 0:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("UPGD does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["utility"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                ps, gs, us, bcs = by_key.setdefault((p.device, p.dtype), ([], [], [], []))
                ps.append(p)
                gs.append(p.grad)
                us.append(state["utility"])
                bcs.append(1 - beta ** state["step"])
            buckets.extend((group, *lists) for lists in by_key.values())
        return buckets

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One UPGD step over every parameter with a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        buckets = self._buckets()

        # pass 1: every utility, and the network-wide maximum (kept on the device)
        peaks = []
        for group, ps, gs, us, bcs in buckets:
            beta = group["beta_utility"]
            torch._foreach_mul_(us, beta)
            torch._foreach_addcmul_(us, gs, ps, value=-(1 - beta))
            if group["scaling"] == "global":
                maxes = torch._foreach_max(us)
                if group["eta_from"] == "corrected":
                    maxes = torch._foreach_div(maxes, bcs)
                peaks.append(torch.stack(maxes).max())
        eta = peaks[0] if len(peaks) == 1 else None
        if len(peaks) > 1:
            dtype = functools.reduce(torch.promote_types, [p.dtype for p in peaks])
            eta = torch.stack([p.to(peaks[0].device, dtype) for p in peaks]).max()

        # pass 2: gate = 1 - s = sigmoid(-z), then the update
        for group, ps, gs, us, bcs in buckets:
            lr, wd, sigma = group["lr"], group["weight_decay"], group["sigma"]
            dtype = ps[0].dtype
            same_bc = all(b == bcs[0] for b in bcs)
            gate = torch._foreach_div(us, -bcs[0]) if same_bc else torch._foreach_div(us, [-b for b in bcs])
            if group["scaling"] == "global":
                eta_b = eta.to(device=ps[0].device, dtype=dtype).clamp_min(torch.finfo(dtype).tiny)
                torch._foreach_div_(gate, eta_b)
            else:
                for z in gate:
                    dims = tuple(range(1, z.dim())) if z.dim() >= 2 else None
                    z.div_(torch.linalg.vector_norm(z, dim=dims, keepdim=True).clamp_min_(NORM_EPS))
            torch._foreach_sigmoid_(gate)

            noise = None
            if sigma > 0:
                flat = torch.randn(sum(p.numel() for p in ps), device=ps[0].device, dtype=dtype)
                noise = [n.view(p.shape) for n, p in zip(flat.split([p.numel() for p in ps]), ps)]
            if lr * wd != 0:
                torch._foreach_mul_(ps, 1 - lr * wd)
            if group["protect"]:
                if noise is not None:
                    torch._foreach_mul_(noise, sigma)
                    torch._foreach_add_(noise, gs)
                torch._foreach_addcmul_(ps, gs if noise is None else noise, gate, value=-lr)
            else:
                torch._foreach_add_(ps, gs, alpha=-lr)
                if noise is not None:
                    torch._foreach_addcmul_(ps, noise, gate, value=-lr * sigma)
        return loss
