"""The largest singular value of several weight matrices at once, by power iteration from persistent
vectors (as torch's ``spectral_norm``), with its gradient formed as one outer product per matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from clframe.strategies._penalty import FlatParams
from torch import Tensor


def as_matrix(w: Tensor) -> Tensor:
    """``w`` as a matrix that keeps its first dimension: a conv kernel [out, in, k, k] becomes [out, in*k*k]."""
    return w.reshape(w.shape[0], -1)


@torch.no_grad()
def power_iteration(w: Tensor, u: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    """``iterations`` (>= 1) power-iteration steps on ``w`` [m, n] from ``u`` [m]; returns new unit
    vectors ``u`` [m] and ``v`` [n] (``v`` is recomputed from ``u``, as in torch's spectral_norm)."""
    for _ in range(iterations):
        v = F.normalize(w.t() @ u, dim=0)
        u = F.normalize(w @ v, dim=0)
    return u, v


def _normalized(xs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Each vector over its norm (at least 1e-12, as ``F.normalize``), and the norms."""
    norms = torch._foreach_norm(xs)
    return torch._foreach_div(xs, torch._foreach_clamp_min(norms, 1e-12)), norms


@torch.no_grad()
def power_iterations(ws: list[Tensor], us: list[Tensor], iterations: int) -> tuple[list[Tensor], ...]:
    """``power_iteration`` on all matrices ``ws`` [m, n] at once, from columns ``us`` [m, 1]; returns the
    new columns ``u`` [m, 1] and ``v`` [n, 1], and ``||W v||`` of the last step [L], which is ``u^T W v``
    (``u`` being ``W v`` normalized): no further product with ``W`` is needed for ``sigma``."""
    wts = [w.t() for w in ws]
    for _ in range(iterations):
        vs = _normalized(torch._foreach_mm(wts, us))[0]
        us, norms = _normalized(torch._foreach_mm(ws, vs))
    return us, vs, torch.stack(norms)


class _Penalty(torch.autograd.Function):
    """``spectral_penalty`` as one autograd node."""

    @staticmethod
    def forward(ctx, us: list[Tensor], vs: list[Tensor], sigma: Tensor, biases: FlatParams | None, k: float,
                bias_weight: float, scale: float, *params: Tensor) -> Tensor:
        weights = params[: len(us)]
        # u [out, 1, ...] times v [1, in, ...] is the outer product in the weight's own shape: a new tensor
        # that autograd adds the task's gradient into in place (it could not into a reshaped view)
        ctx.us = [u.view(-1, *[1] * (w.ndim - 1)) for u, w in zip(us, weights)]
        ctx.vs = [v.view(1, *w.shape[1:]) for v, w in zip(vs, weights)]
        ctx.biases, ctx.bias_weight, ctx.scale = params[len(us):], bias_weight, scale
        excess = sigma.pow(k) - 1  # [L]
        # d/dsigma of (sigma^k - 1)^2, by hand: one autograd node for the whole penalty
        ctx.slope = 2 * k * excess * sigma.pow(k - 1)
        flat = biases.read() if biases is not None else sigma.new_zeros(1)
        return scale * (excess.square().sum() + bias_weight * flat.mul_(flat).sum())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, out: Tensor) -> tuple[Tensor | None, ...]:
        slope = ctx.slope * (out * ctx.scale)  # [L]
        grads = torch._foreach_mul(torch._foreach_mul(ctx.us, slope.unbind()), ctx.vs)
        biases = torch._foreach_mul(ctx.biases, out * (2 * ctx.scale * ctx.bias_weight)) if ctx.biases else []
        return (None,) * 7 + (*grads, *biases)


def spectral_penalty(weights: list[Tensor], us: list[Tensor], vs: list[Tensor], sigma: Tensor,
                     biases: FlatParams | None = None, k: float = 2.0, bias_weight: float = 1.0,
                     scale: float = 1.0) -> Tensor:
    """``scale * (sum_l (sigma_l^k - 1)^2 + bias_weight * sum ||b||^2)`` with ``sigma_l = u_l^T W_l v_l``
    for fixed unit columns ``us`` [m, 1], ``vs`` [n, 1] whose value ``sigma`` [L] is known
    (``power_iterations``): the gradient of ``sigma_l`` is ``u_l v_l^T``, one outer product per weight.

    Args:
        weights: the weights ``W_l`` (any shape whose first dimension is ``m``).
        us, vs, sigma: from ``power_iterations`` on ``weights``.
        biases: the biases (default None: none).
        k: exponent of ``sigma`` (default 2.0).
        bias_weight: weight of the biases' term (default 1.0).
        scale: factor of the whole (default 1.0).
    """
    bias_params = biases.params if biases is not None else ()
    return _Penalty.apply(us, vs, sigma, biases, k, bias_weight, scale, *weights, *bias_params)
