"""GRU and LSTM backbones: padded sequences read out at each sequence's last valid step."""

from __future__ import annotations

import pytest
import torch

from clframe.config.registry import BACKBONES, ParamError
from clframe.data.sequences import with_lengths
from clframe.models.backbones.rnn import GRU, LSTM

CLASSES = {"gru": GRU, "lstm": LSTM}


def padded(n: int = 3, steps: int = 6, features: int = 2, lengths: list[int] | None = None) -> torch.Tensor:
    lengths = lengths or [6, 2, 4]
    return with_lengths(torch.randn(n, steps, features), torch.tensor(lengths))


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("readout, shape", [("last", (3, 5)), ("every", (3, 6, 5))])
def test_output_shape_follows_the_readout(name, readout, shape):
    torch.manual_seed(0)
    net = CLASSES[name]((6, 3), hidden=5, readout=readout)
    assert net(padded()).shape == shape and net.out_features == 5


@pytest.mark.parametrize("name", CLASSES)
def test_last_readout_ignores_the_padding(name):
    torch.manual_seed(0)
    net = CLASSES[name]((6, 3), hidden=5)
    x = padded()
    noisy = x.clone()
    noisy[1, 2:, :2] = torch.randn(4, 2) * 10  # sequence 1 has 2 valid steps
    noisy[2, 4:, :2] = 7.0
    assert torch.allclose(net(noisy), net(x), atol=1e-6)


@pytest.mark.parametrize("name", CLASSES)
def test_last_readout_equals_the_rnn_on_each_unpadded_sequence(name):
    torch.manual_seed(0)
    net = CLASSES[name]((6, 3), hidden=5)
    x, lengths = padded(), [6, 2, 4]
    feats = net(x)
    for i, n in enumerate(lengths):
        alone, _ = net.rnn(x[i : i + 1, :n, :2])
        assert torch.allclose(feats[i], alone[0, -1], atol=1e-6)


@pytest.mark.parametrize("name", CLASSES)
def test_two_layers(name):
    torch.manual_seed(0)
    net = CLASSES[name]((6, 3), hidden=4, num_layers=2)
    out = net(padded())
    assert out.shape == (3, 4) and torch.isfinite(out).all()
    assert net.rnn.num_layers == 2


@pytest.mark.parametrize("name", CLASSES)
def test_image_input_shape_names_the_sequence_scenarios(name):
    with pytest.raises(ParamError, match="sequential_digits") as info:
        CLASSES[name]((1, 8, 8))
    assert info.value.param == "input_shape"


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_silenced_units_stay_at_zero_and_change_the_output(name, num_layers):
    torch.manual_seed(0)
    net = CLASSES[name]((6, 3), hidden=6, num_layers=num_layers, readout="every")
    x = padded()
    before = net(x)
    units = torch.tensor([0, 3, 4])
    last = num_layers - 1
    net.silence(last, units)
    if num_layers > 1:
        net.silence(0, units)
    after = net(x)
    assert (after[..., units] == 0).all()
    assert (after[..., [1, 2, 5]] != 0).any()
    assert not torch.allclose(after, before)


def test_silencing_a_lower_layer_cuts_what_the_next_layer_reads_from_it():
    torch.manual_seed(0)
    net = GRU((6, 3), hidden=4, num_layers=2)
    x = padded()
    net.silence(0, torch.tensor([1]))
    # the silenced unit's outgoing weights into layer 1 are zero, so its state cannot reach layer 1
    assert (net.rnn.weight_ih_l1[:, 1] == 0).all()
    first = torch.nn.GRU(2, 4, batch_first=True)  # layer 0 alone
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(first, f"{name}_l0").copy_(getattr(net.rnn, f"{name}_l0"))
        h0, _ = first(x[..., :2])
    assert (h0[..., 1] == 0).all()


def test_the_registry_builds_the_backbone():
    net = BACKBONES.build("gru", {}, input_shape=(8, 9))
    assert isinstance(net, GRU)
    assert net.rnn.input_size == 8 and net.out_features == 64
    assert net(with_lengths(torch.randn(2, 8, 8))).shape == (2, 64)
