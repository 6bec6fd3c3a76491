"""The kaiming init option of the MLP backbone and the linear head (the loss-of-plasticity reference's)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clframe.models.backbones.mlp import MLP
from clframe.models.heads.linear import LinearHead
from clframe.models.init import init_linear


def test_kaiming_draws_up_to_the_gain_bound_with_zero_bias():
    torch.manual_seed(0)
    mlp = MLP((400,), hidden=[300], init="kaiming")
    w, b = mlp.net[1].weight, mlp.net[1].bias
    bound = math.sqrt(2) * math.sqrt(3 / 400)  # relu gain * sqrt(3 / fan_in)
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound and torch.all(b == 0)
    head = LinearHead(300, 2, init="kaiming")
    assert head.fc.weight.abs().max() <= math.sqrt(3 / 300) and torch.all(head.fc.bias == 0)


def test_default_keeps_torch_init():
    torch.manual_seed(0)
    layer = init_linear(nn.Linear(400, 300), "default")
    assert layer.weight.abs().max() <= 1 / math.sqrt(400) and layer.bias.abs().max() > 0


def test_unknown_init_is_an_error():
    with pytest.raises(ValueError, match="unknown init 'xavier' .default, kaiming."):
        init_linear(nn.Linear(2, 2), "xavier")
