"""Multi-layer perceptron over flattened inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from annotated_types import Ge, Interval
from torch import Tensor, nn

from clframe.config.registry import BACKBONES
from clframe.models.init import init_linear

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid}


@BACKBONES.register("mlp")
class MLP(nn.Module):
    """Flatten, then ``Linear -> activation (-> dropout)`` for each hidden layer.

    Args:
        input_shape: shape of one sample (supplied by the scenario).
        hidden: hidden layer widths (default (256, 256)).
        activation: ``relu``, ``tanh``, ``gelu``, ``leaky_relu`` or ``sigmoid`` (default ``relu``).
        dropout: dropout after each activation (default 0.0).
        init: ``default`` (``nn.Linear``'s own) or ``kaiming``: ``kaiming_uniform_`` with the
            activation's gain (GELU counted as ReLU) and zero biases, the loss-of-plasticity
            reference's init (default ``default``).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden: Sequence[Annotated[int, Ge(1)]] = (256, 256),
        activation: Literal["relu", "tanh", "gelu", "leaky_relu", "sigmoid"] = "relu",
        dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
        init: Literal["default", "kaiming"] = "default",
    ) -> None:
        super().__init__()
        width = 1
        for d in input_shape:
            width *= d
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers += [init_linear(nn.Linear(width, h), init, activation), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.net = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # [B, out_features]
