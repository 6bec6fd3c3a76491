"""The self-referential weight matrix (SRWM) backbone (Irie et al., 2022)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Interval
from torch import Tensor, nn

from clframe.config.registry import BACKBONES
from clframe.kernels.srwm import srwm
from clframe.kernels.srwm.naive import N_RATES
from clframe.models.backbones.layer_stack import LayerStack


class SRWMLayer(nn.Module):
    """One multi-head SRWM layer: ``LayerNorm(x + dropout(out_proj(SRWM(x))))``.

    Each head owns a learned initial matrix ``W0`` [d_head + 2 d_head + 4, d_head] that is copied for
    every sequence and then modifies itself step by step.

    Args:
        d_model: width of the layer.
        n_heads: heads (``d_model`` must divide by it).
        dropout: dropout on the layer's output, in training only.
        backend: ``auto``, ``naive`` or ``triton`` (see ``clframe.kernels.srwm.srwm``).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, backend: str) -> None:
        super().__init__()
        self.n_heads, self.d_head, self.backend = n_heads, d_model // n_heads, backend
        d = self.d_head
        self.w0 = nn.Parameter(torch.randn(n_heads, 3 * d + N_RATES, d) / d ** 0.5)
        self.out_proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        heads = x.view(b, t, self.n_heads, self.d_head)  # [B, T, H, D]
        y, _ = srwm(heads, self.w0.expand(b, -1, -1, -1), self.d_head, backend=self.backend)
        return self.norm(x + self.drop(self.out_proj(y.reshape(b, t, -1))))


@BACKBONES.register("srwm")
class SRWM(LayerStack):
    """A stack of SRWM layers over ``[B, T, F + 1]`` sequences: a linear input projection, then
    ``n_layers`` ``SRWMLayer``s, read out at each sequence's last valid step or at every step.

    Args:
        input_shape: ``(T, F + 1)`` (supplied by the scenario).
        d_model: layer width (default 128).
        n_layers: stacked layers (default 2).
        n_heads: heads per layer (default 4).
        dropout: dropout after each layer's output projection (default 0.0).
        readout: ``last`` [B, d_model] or ``every`` [B, T, d_model] (default ``last``).
        backend: ``auto`` (the Triton kernel on CUDA, the plain-PyTorch recurrence elsewhere),
            ``naive`` or ``triton`` (default ``auto``).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        d_model: Annotated[int, Ge(1)] = 128,
        n_layers: Annotated[int, Ge(1)] = 2,
        n_heads: Annotated[int, Ge(1)] = 4,
        dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
        readout: Literal["last", "every"] = "last",
        backend: Literal["auto", "naive", "triton"] = "auto",
    ) -> None:
        super().__init__(input_shape, "srwm", d_model, n_layers, n_heads, readout,
                         lambda: SRWMLayer(d_model, n_heads, dropout, backend))
