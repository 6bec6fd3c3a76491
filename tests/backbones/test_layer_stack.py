"""The fast-weight backbones (srwm, fast_weights): shapes, readouts, causality over padding, errors."""

from __future__ import annotations

import pytest
import torch

from clframe.config.registry import BACKBONES
from clframe.data.sequences import with_lengths
from clframe.errors import ConfigError

NAMES = ["srwm", "fast_weights"]


def build(name, **params):
    torch.manual_seed(0)
    return BACKBONES.build(name, {"d_model": 8, "n_heads": 2, **params}, input_shape=(7, 4)).eval()


def seqs():
    g = torch.Generator().manual_seed(1)
    return with_lengths(torch.randn(3, 7, 3, generator=g), torch.tensor([7, 4, 1]))


@pytest.mark.parametrize("name", NAMES)
def test_readouts_and_causality_over_padding(name):
    x = seqs()
    last, every = build(name)(x), build(name, readout="every")(x)
    assert last.shape == (3, 8) and every.shape == (3, 7, 8)
    torch.testing.assert_close(last[1], every[1, 3])  # sequence 1 ends at step 3
    noisy = x.clone()
    noisy[1, 4:, :-1] = 100.0  # what follows a sequence's end does not change its readout
    torch.testing.assert_close(build(name)(noisy)[1], last[1])


@pytest.mark.parametrize("name", NAMES)
def test_the_fast_weights_learn_within_a_sequence(name):
    # the same last input after different histories gives different features: the layer has state
    m = build(name)
    x = seqs()
    y = x.clone()
    y[0, :6, :-1] = -x[0, :6, :-1]
    assert not torch.allclose(m(x)[0], m(y)[0])


@pytest.mark.parametrize("name", NAMES)
def test_bad_settings_name_the_key(name):
    with pytest.raises(ConfigError, match="n_heads"):
        build(name, n_heads=3)
    with pytest.raises(ConfigError, match="sequence"):
        BACKBONES.build(name, {}, input_shape=(1, 8, 8))
