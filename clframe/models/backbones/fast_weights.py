"""The delta-rule fast weight programmer backbone (Schlag et al., 2021; DeltaNet)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Interval
from torch import Tensor, nn
from torch.nn import functional as F

from clframe.config.registry import BACKBONES
from clframe.kernels.delta_rule import delta_rule
from clframe.models.backbones.layer_stack import LayerStack


def feature_map(z: Tensor, phi: str) -> Tensor:
    """``elu_sum``: ELU + 1, normalised to sum 1; ``l2``: L2-normalised (DeltaNet). [..., D]"""
    if phi == "l2":
        return F.normalize(z, dim=-1)
    z = F.elu(z) + 1
    return z / z.sum(-1, keepdim=True)


class DeltaLayer(nn.Module):
    """One multi-head fast-weight layer: a slow projection writes keys and values into a fast
    weight matrix per head with the delta rule and reads it with queries;
    ``LayerNorm(x + dropout(out_proj(read)))``.

    Args:
        d_model: width of the layer.
        n_heads: heads (``d_model`` must divide by it).
        dropout: dropout on the layer's output, in training only.
        phi: ``elu_sum`` or ``l2`` (see ``feature_map``).
        backend: ``auto``, ``naive`` or ``triton`` (see ``clframe.kernels.delta_rule.delta_rule``).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, phi: str, backend: str) -> None:
        super().__init__()
        self.n_heads, self.phi, self.backend = n_heads, phi, backend
        self.qkvb = nn.Linear(d_model, 3 * d_model + n_heads, bias=False)
        self.out_proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v, beta = self.qkvb(x).split([d, d, d, self.n_heads], dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, -1) for z in (q, k, v))  # [B, T, H, D]
        o, _ = delta_rule(feature_map(q, self.phi), feature_map(k, self.phi), v, torch.sigmoid(beta),
                          backend=self.backend)
        return self.norm(x + self.drop(self.out_proj(o.reshape(b, t, d))))


@BACKBONES.register("fast_weights")
class FastWeights(LayerStack):
    """A stack of delta-rule fast-weight layers over ``[B, T, F + 1]`` sequences (fast weights start
    at 0 for every sequence), read out at each sequence's last valid step or at every step.

    Args:
        input_shape: ``(T, F + 1)`` (supplied by the scenario).
        d_model: layer width (default 128).
        n_layers: stacked layers (default 2).
        n_heads: heads per layer (default 4).
        dropout: dropout after each layer's output projection (default 0.0).
        phi: key/query feature map, ``elu_sum`` or ``l2`` (default ``elu_sum``).
        readout: ``last`` [B, d_model] or ``every`` [B, T, d_model] (default ``last``).
        backend: ``auto`` (fla-core's Triton kernel on CUDA, the plain-PyTorch loop elsewhere),
            ``naive`` or ``triton`` (fla-core's kernel) (default ``auto``).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        d_model: Annotated[int, Ge(1)] = 128,
        n_layers: Annotated[int, Ge(1)] = 2,
        n_heads: Annotated[int, Ge(1)] = 4,
        dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
        phi: Literal["elu_sum", "l2"] = "elu_sum",
        readout: Literal["last", "every"] = "last",
        backend: Literal["auto", "naive", "triton"] = "auto",
    ) -> None:
        super().__init__(input_shape, "fast_weights", d_model, n_layers, n_heads, readout,
                         lambda: DeltaLayer(d_model, n_heads, dropout, phi, backend))
