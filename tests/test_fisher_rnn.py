"""The diagonal Fisher of recurrent models: per-sample gradients without vmap for torch.nn RNNs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from clframe.strategies._fisher import diagonal_fisher
from torch import nn

from clframe.data.sequences import with_lengths
from clframe.data.stream import TensorData
from clframe.models.backbones.rnn import GRU, LSTM
from clframe.models.backbones.tau_rnn import TauRNN
from clframe.models.heads.linear import LinearHead

BACKBONES = {
    "gru": lambda: GRU((5, 3), hidden=4),
    "lstm": lambda: LSTM((5, 3), hidden=4),
    "tau_rnn": lambda: TauRNN((5, 3), hidden=4),
}


class Model(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x), t)


def setup(name: str) -> tuple[Model, TensorData]:
    torch.manual_seed(0)
    model = Model(BACKBONES[name](), LinearHead(4, 3))
    x = with_lengths(torch.randn(6, 5, 2), torch.tensor([5, 3, 1, 4, 5, 2]))
    return model, TensorData(x, torch.tensor([0, 1, 2, 1, 0, 2]), torch.zeros(6, dtype=torch.long))


def squared_grads(model: Model, data: TensorData, batches: list[slice]) -> dict[str, torch.Tensor]:
    """Mean over ``batches`` of the squared gradient of each batch's mean loss."""
    params = dict(model.named_parameters())
    out = {k: torch.zeros_like(p) for k, p in params.items()}
    for s in batches:
        loss = F.cross_entropy(model(data.x[s], data.t[s]), data.y[s])
        for k, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
            out[k] += g.pow(2) / len(batches)
    return out


@pytest.mark.parametrize("name", BACKBONES)
def test_per_sample_fisher_is_the_mean_squared_per_sample_gradient(name):
    model, data = setup(name)
    model.train()
    fisher = diagonal_fisher(model, data, kind="per_sample", batch_size=4)
    assert model.training  # the mode comes back
    model.eval()
    expected = squared_grads(model, data, [slice(i, i + 1) for i in range(6)])
    assert fisher.keys() == expected.keys()
    for k in expected:
        assert torch.allclose(fisher[k], expected[k], rtol=1e-4, atol=1e-7), k
    assert sum(v.sum() for v in fisher.values()) > 0


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_per_sample_fisher_does_not_depend_on_the_batch_size(name):
    model, data = setup(name)
    one, four = (diagonal_fisher(model, data, kind="per_sample", batch_size=b) for b in (1, 4))
    assert all(torch.allclose(one[k], four[k], rtol=1e-5, atol=1e-8) for k in one)


def test_empirical_fisher_squares_the_minibatch_mean_gradients():
    model, data = setup("gru")
    fisher = diagonal_fisher(model, data, kind="empirical", batch_size=3)
    model.eval()
    expected = squared_grads(model, data, [slice(0, 3), slice(3, 6)])
    for k in expected:
        assert torch.allclose(fisher[k], expected[k], rtol=1e-4, atol=1e-7), k


def test_max_samples_limits_the_per_sample_estimate():
    model, data = setup("gru")
    fisher = diagonal_fisher(model, data, kind="per_sample", max_samples=2)
    model.eval()
    expected = squared_grads(model, data, [slice(0, 1), slice(1, 2)])
    assert all(torch.allclose(fisher[k], expected[k], rtol=1e-4, atol=1e-7) for k in expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_fisher_of_a_cudnn_rnn_in_eval_mode_matches_cpu(name):
    # cuDNN's RNN backward raises in eval mode; the estimate turns cuDNN off and must agree with the CPU
    model, data = setup(name)
    cpu = diagonal_fisher(model, data, kind="empirical", batch_size=3)
    cuda_data = TensorData(data.x.cuda(), data.y.cuda(), data.t.cuda())
    gpu = diagonal_fisher(model.cuda(), cuda_data, kind="empirical", batch_size=3)
    assert all(torch.allclose(cpu[k], gpu[k].cpu(), rtol=1e-3, atol=1e-6) for k in cpu)
