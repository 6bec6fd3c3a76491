import pytest
import torch
from torch import nn

from clframe.models.backbones.mlp import MLP
from clframe.models.heads.linear import LinearHead, MultiHead
from clframe.models.hypernets.chunks import chunk_layout
from clframe.models.hypernets.target import TargetNet
from clframe.models.model import Model


def test_functional_target_matches_the_model_with_its_own_weights():
    torch.manual_seed(0)
    model = Model(MLP((1, 8, 8), hidden=(16,)), MultiHead(16, 10, 3))
    x, t = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 1, 0])
    expected = model(x, t)
    target = TargetNet(model)
    assert target.n_params == sum(p.numel() for p in model.parameters())
    assert not any(p.requires_grad for p in model.parameters())  # generated, not trained
    torch.testing.assert_close(target(target.theta0(), x, t), expected)


def test_functional_target_uses_the_given_weights_and_passes_gradients_to_them():
    model = Model(MLP((4,), hidden=(3,)), LinearHead(3, 2))
    target = TargetNet(model)
    w = torch.zeros(target.n_params, requires_grad=True)
    out = target(w, torch.randn(6, 4), torch.zeros(6, dtype=torch.long))
    assert torch.equal(out, torch.zeros(6, 2))  # all weights zero
    out.sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_a_recurrent_backbone_is_a_target():
    torch.manual_seed(0)
    model = Model(_gru(), LinearHead(8, 2))
    x = torch.randn(4, 5, 3)
    t = torch.zeros(4, dtype=torch.long)
    expected = model(x, t)
    target = TargetNet(model)
    torch.testing.assert_close(target(target.theta0(), x, t), expected)


def _gru() -> nn.Module:
    from clframe.config.registry import BACKBONES

    return BACKBONES.build("gru", {"hidden": 8}, input_shape=(5, 3))


def test_layers_group_a_weight_with_its_bias():
    target = TargetNet(Model(MLP((4,), hidden=(3,)), LinearHead(3, 2)))
    assert target.layers() == [4 * 3 + 3, 3 * 2 + 2]


@pytest.mark.parametrize("straddle", [True, False])
def test_chunk_layout_covers_every_weight_once(straddle):
    layers = [7, 10, 3]
    n, size, index = chunk_layout(layers, 4, straddle)
    assert len(index) == 20 and len(set(index.tolist())) == 20 and int(index.max()) < n * size
    if not straddle:
        assert n == 2 + 3 + 1
        chunk_of = index // size
        bounds = [0, 7, 17, 20]
        per_layer = [set(chunk_of[a:b].tolist()) for a, b in zip(bounds, bounds[1:])]
        # no chunk holds weights of two layers
        assert all(not (per_layer[i] & per_layer[j]) for i in range(3) for j in range(i + 1, 3))
    else:
        assert n == 5 and torch.equal(index, torch.arange(20))


def test_no_chunking_is_one_chunk():
    assert chunk_layout([5, 6], None, False)[:2] == (1, 11)


def test_a_gru_target_learns_sequences_under_an_rnn_hypernetwork(tmp_path):
    from clframe.config import compose
    from clframe.run.runner import run

    s = run(compose(["scenario=sequential_digits", "scenario.n_experiences=2", "scenario.task_incremental=true",
                     "backbone=gru", "backbone.hidden=16", "hypernet=hnet_rnn", "hypernet.chunk_size=200",
                     "strategy=hnet_reg", "train.optimizer=adam", "train.lr=0.003", "train.epochs=3",
                     "monitors.continual.enabled=false", "logger.progress=false",
                     "checkpoint.enabled=false"]), tmp_path)
    assert s["hypernet"]["target_params"] == 3 * 16 * (8 + 16) + 2 * 3 * 16 + (16 * 10 + 10)
    assert min(s["acc_matrix"][0][0], s["acc_matrix"][1][1]) > 0.8  # two-way tasks: chance is 0.5
