"""Weight initialisations shared by backbones and heads."""

from __future__ import annotations

from torch import nn


def init_linear(layer: nn.Linear, init: str, nonlinearity: str = "linear") -> nn.Linear:
    """Re-initialise ``layer`` in place and return it.

    Args:
        layer: the layer.
        init: ``default`` keeps ``nn.Linear``'s own init; ``kaiming``: ``kaiming_uniform_`` with the
            gain of ``nonlinearity`` and a zero bias.
        nonlinearity: the activation after the layer, for the gain; GELU counts as ReLU (default
            ``linear``).
    """
    if init == "kaiming":
        gain_of = {"gelu": "relu"}.get(nonlinearity, nonlinearity)
        nn.init.kaiming_uniform_(layer.weight, nonlinearity=gain_of)
        nn.init.zeros_(layer.bias)
    elif init != "default":
        raise ValueError(f"unknown init '{init}' (default, kaiming)")
    return layer


def activation_gain(act: nn.Module) -> float:
    """``nn.init.calculate_gain`` of an activation module (ReLU, Tanh, Sigmoid, LeakyReLU with its
    slope, SELU; other ReLU-like ones such as GELU and SiLU count as ReLU)."""
    if isinstance(act, nn.LeakyReLU):
        return nn.init.calculate_gain("leaky_relu", act.negative_slope)
    names = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SELU: "selu", nn.Identity: "linear"}
    return nn.init.calculate_gain(names.get(type(act), "relu"))
