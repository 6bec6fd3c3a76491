"""Unit ablation: scores of a recurrent model with a fraction of every layer's units silenced."""

from __future__ import annotations

import copy

import pytest
import torch

from clframe.data.sequences import with_lengths
from clframe.data.stream import TensorData
from clframe.errors import ConfigError
from clframe.evaluation.ablation import ablate, choose_units
from clframe.evaluation.evaluate import evaluate_many
from clframe.models.backbones.mlp import MLP
from clframe.models.backbones.rnn import GRU
from clframe.models.backbones.tau_rnn import TauRNN
from clframe.models.heads.linear import LinearHead

BACKBONES = {"tau_rnn": lambda: TauRNN((5, 3), hidden=6, num_layers=2), "gru": lambda: GRU((5, 3), hidden=6)}


def data(n: int, seed: int) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x = with_lengths(torch.randn(n, 5, 2, generator=g), torch.randint(1, 6, (n,), generator=g))
    y = (x[:, :, 0].sum(1) > 0).long() + (x[:, :, 1].sum(1) > 0).long()  # 3 classes
    return TensorData(x, y, torch.zeros(n, dtype=torch.long))


def trained(name: str) -> tuple[torch.nn.Module, torch.nn.Module, list[TensorData]]:
    torch.manual_seed(0)
    backbone, head = BACKBONES[name](), LinearHead(6, 3)
    train = data(64, 0)
    opt = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=0.02)
    for _ in range(15):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(backbone(train.x), train.t), train.y).backward()
        opt.step()
    return backbone, head, [data(20, 1), data(30, 2)]


@pytest.mark.parametrize("name", BACKBONES)
def test_no_ablation_is_the_plain_evaluation_and_the_model_is_left_untouched(name):
    backbone, head, datasets = trained(name)
    before = {k: v.clone() for k, v in [*backbone.state_dict().items(), *head.state_dict().items()]}
    out = ablate(backbone, head, datasets, fractions=(0, 1.0), repeats=2, batch_size=16)
    assert out["fractions"] == [0, 1.0] and out["order"] == "random"
    assert len(out["scores"]) == 2 and all(len(runs) == 2 for runs in out["scores"])
    assert len(out["mean"]) == 2 and all(len(m) == 2 for m in out["mean"])
    backbone.eval()
    plain = evaluate_many(lambda x, t: head(backbone(x), t), datasets)[0]
    assert out["mean"][0] == pytest.approx(plain)
    after = {k: v for k, v in [*backbone.state_dict().items(), *head.state_dict().items()]}
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", BACKBONES)
def test_silencing_every_unit_leaves_only_the_head_bias(name):
    backbone, head, datasets = trained(name)
    out = ablate(backbone, head, datasets, fractions=(1.0,), repeats=1)
    # every sample gets the class of the largest bias, so the accuracy is that class's share
    majority = head.fc.bias.argmax()
    assert out["mean"][0] == pytest.approx([(d.y == majority).float().mean().item() for d in datasets])
    # and the silenced copy's features are exactly 0
    silenced = copy.deepcopy(backbone).eval()
    for layer, units in enumerate(choose_units(silenced, 1.0, "random", torch.Generator().manual_seed(0))):
        assert len(units) == 6
        silenced.silence(layer, units)
    with torch.no_grad():
        feats = silenced(datasets[0].x)
        assert (feats == 0).all()
        assert torch.equal(head(feats, datasets[0].t), head.fc.bias.expand(len(feats), -1))


def test_tau_orders_pick_the_shortest_or_longest_timescales():
    net = TauRNN((5, 3), hidden=6, num_layers=2)
    with torch.no_grad():
        net.layers[0].tau.copy_(torch.tensor([1.9, 1.1, 0.5, 1.7, 1.3, 1.5]))  # 0.5 counts as 1
        net.layers[1].tau.copy_(torch.tensor([1.0, 1.8, 1.2, 1.6, 1.4, 1.05]))
    g = torch.Generator().manual_seed(0)
    shortest = choose_units(net, 0.5, "shortest_tau", g)
    assert [sorted(u.tolist()) for u in shortest] == [[1, 2, 4], [0, 2, 5]]
    longest = choose_units(net, 0.5, "longest_tau", g)
    assert [sorted(u.tolist()) for u in longest] == [[0, 3, 5], [1, 3, 4]]
    assert [len(u) for u in choose_units(net, 0.0, "random", g)] == [0, 0]


def test_tau_orders_need_timescales():
    with pytest.raises(ConfigError, match="order=shortest_tau needs a backbone with timescales"):
        choose_units(GRU((5, 3), hidden=4), 0.5, "shortest_tau", torch.Generator())


def test_a_backbone_without_silence_is_refused():
    backbone, head = MLP((5, 3), hidden=(8,)), LinearHead(8, 3)
    with pytest.raises(ConfigError, match="silence"):
        ablate(backbone, head, [data(4, 0)], fractions=(0.5,))


@pytest.mark.parametrize(("fraction", "order"), [(1.5, "random"), (0.5, "alphabetical")])
def test_bad_fractions_and_orders_are_config_errors(fraction, order):
    with pytest.raises(ConfigError):
        choose_units(TauRNN((5, 3), hidden=4), fraction, order, torch.Generator())
