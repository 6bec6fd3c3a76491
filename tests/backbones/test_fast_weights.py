"""The delta-rule fast-weight backbone: feature maps, the kernel's conventions, training with EWC."""

from __future__ import annotations

import torch

from clframe.config import compose
from clframe.kernels.delta_rule import delta_rule_naive
from clframe.models.backbones.fast_weights import DeltaLayer, feature_map
from clframe.run.runner import run


def test_feature_maps_are_positive_and_sum_to_one_or_unit_norm():
    z = torch.randn(4, 6) * 3
    e = feature_map(z, "elu_sum")
    assert (e > 0).all() and torch.allclose(e.sum(-1), torch.ones(4))
    assert torch.allclose(feature_map(z, "l2").norm(dim=-1), torch.ones(4))


def test_layer_reads_the_delta_rule_memory():
    torch.manual_seed(0)
    layer = DeltaLayer(8, 2, 0.0, "elu_sum", "naive").eval()
    x = torch.randn(2, 5, 8)
    q, k, v, beta = layer.qkvb(x).split([8, 8, 8, 2], dim=-1)
    q, k, v = (z.view(2, 5, 2, 4) for z in (q, k, v))
    o, _ = delta_rule_naive(feature_map(q, "elu_sum"), feature_map(k, "elu_sum"), v, beta.sigmoid())
    expected = layer.norm(x + layer.out_proj(o.reshape(2, 5, 8)))
    torch.testing.assert_close(layer(x), expected)


def test_fast_weights_learn_split_sequential_digits_with_ewc(tmp_path):
    s = run(compose(["scenario=sequential_digits", "scenario.n_experiences=2", "scenario.task_incremental=true",
                     "head=multihead", "backbone=fast_weights", "backbone.d_model=32", "backbone.n_layers=1",
                     "strategy=ewc", "train.optimizer=adam", "train.lr=0.003", "train.epochs=6",
                     "monitors.continual.every=20", "logger.progress=false", "checkpoint.enabled=false"]), tmp_path)
    assert len(s["acc_matrix"]) == 2 and min(s["acc_matrix"][0][0], s["acc_matrix"][1][1]) > 0.75
