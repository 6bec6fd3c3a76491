"""Shared mechanics of the penalty strategies: parameters read as one flat vector, and a weighted
quadratic penalty whose gradient is formed elementwise in its forward instead of through autograd."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# the integer type a float type's bits are read as, for sort_order
_BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16,
         torch.bfloat16: torch.int16}


class FlatParams:
    """A fixed list of parameters read as one flat vector [N] (their ``numel`` summed, in list order).

    Args:
        params: the tensors, on one device; the flat vector has the first one's dtype.
    """

    def __init__(self, params: Sequence[Tensor]) -> None:
        self.params = list(params)
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        first = self.params[0]
        # reused by every read: reading the weights allocates nothing
        self.buffer = torch.empty(sum(self.numels), dtype=first.dtype, device=first.device)
        self.views = self.split(self.buffer)

    def __len__(self) -> int:
        return len(self.buffer)

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        """``tensors`` (one per parameter, same numels) concatenated [N], as a new tensor."""
        return torch.cat([t.detach().reshape(-1) for t in tensors]).to(self.buffer)

    def split(self, flat: Tensor) -> list[Tensor]:
        """Views of ``flat`` [N] shaped like the parameters."""
        return [t.view(s) for t, s in zip(flat.split(self.numels), self.shapes)]

    @torch.no_grad()
    def read(self) -> Tensor:
        """The current values [N] in ``buffer``, which the next ``read`` overwrites (no gradient)."""
        torch._foreach_copy_(self.views, self.params)
        return self.buffer


class Quadratic:
    """``sum_k sum_i weight[k, i] * (theta_i - anchor[k, i])^2`` over parameters ``theta`` read as one
    flat vector [N], as a 0-d tensor (no host sync) whose gradient ``2 sum_k weight[k] * (theta - anchor[k])``
    is formed in the forward from the same difference: autograd records one node per call.

    Args:
        flat: the parameters ``theta``.
        anchor: [N] or [K, N], in ``flat``'s order (``FlatParams.flatten``).
        weight: shaped like ``anchor``; None for all ones (default None).
    """

    def __init__(self, flat: FlatParams, anchor: Tensor, weight: Tensor | None = None) -> None:
        self.flat, self.anchor, self.weight = flat, anchor, weight
        # one anchor (the usual case) takes a path without [N] temporaries; its weights split once here
        one = anchor.numel() == len(self.flat)
        self._weights = self.flat.split(weight.view(-1)) if one and weight is not None else None

    def __call__(self, scale: float = 1.0, anchor: Tensor | None = None) -> Tensor:
        """``scale`` times the penalty at the current weights (default 1.0); ``anchor`` replaces the stored
        one for this call (default None)."""
        return _QuadraticFn.apply(self, scale, self.anchor if anchor is None else anchor, *self.flat.params)

    def terms(self, anchor: Tensor) -> tuple[list[Tensor], Tensor]:
        """``weight * (theta - anchor)`` summed over K, shaped like the parameters (new tensors; for K > 1
        views of one), and the penalty."""
        theta = self.flat.read()
        if anchor.numel() == len(theta):
            # the difference in the reused buffer (a fresh [N] tensor costs page faults besides its pass);
            # the gradient as one new tensor per parameter: autograd adds the task's gradient into it in place
            theta.sub_(anchor.view(-1))
            grads = torch._foreach_mul(self.flat.views, 1.0 if self._weights is None else self._weights)
            torch._foreach_mul_(self.flat.views, grads)
            # sum, not dot: the pairwise sum keeps the digits of a per-parameter sum
            return grads, theta.sum()
        diff = theta - anchor  # [K, N]
        grad = diff.clone() if self.weight is None else diff * self.weight
        return self.flat.split(grad.sum(0)), diff.mul_(grad).sum()


class _QuadraticFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Quadratic, scale: float, anchor: Tensor, *params: Tensor) -> Tensor:
        grads, value = q.terms(anchor)
        # saved for autograd's check that the weights do not change before the backward
        ctx.save_for_backward(*params)
        ctx.q, ctx.scale, ctx.anchor, ctx.grads = q, scale, anchor, grads
        return scale * value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, out: Tensor) -> tuple[Tensor | None, ...]:
        _ = ctx.saved_tensors  # raises if a weight was changed in place since the forward
        grads, ctx.grads = ctx.grads, None
        if grads is None:  # a second backward over a retained graph: the first scaled the gradient in place
            grads = ctx.q.terms(ctx.anchor)[0]
        torch._foreach_mul_(grads, out * (2 * ctx.scale))
        return (None, None, None, *grads)


def sort_order(w: Tensor) -> Tensor:
    """Indices that sort the 1-d float tensor ``w`` ascending (ties in any order), via its bits read as
    integers whose order is the floats' (sign-magnitude to two's complement): on the CPU torch sorts
    integers by radix, several times faster than floats, and the sorted values are the same."""
    bits = w.view(_BITS[w.dtype])
    return (bits ^ ((bits >> (8 * bits.element_size() - 1)) & torch.iinfo(bits.dtype).max)).sort().indices
