"""Spectral regularization: power iteration, the penalty and its gradient, and sigma_max in a run."""

from __future__ import annotations

import io

import pytest
import torch
from clframe.strategies.spectral import Spectral, as_matrix, power_iteration
from torch import nn

from clframe.config import compose
from clframe.errors import ConfigError
from clframe.run.runner import build, fit


class Net(nn.Module):
    """Two linear layers and a conv, with a random (not near-orthogonal) scale."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(7, 5)
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.fc2 = nn.Linear(5, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.normal_()


def exact_sigma(w: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(as_matrix(w), 2)


def converged(net: nn.Module, steps: int = 300, **kw) -> Spectral:
    s = Spectral(**kw)
    s.setup(net)
    for _ in range(steps):
        s.penalty()
    return s


def test_power_iteration_converges_to_the_largest_singular_value():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(20, 13, generator=g)
    u, v = power_iteration(w, torch.randn(20, generator=g), 300)
    assert (u @ w @ v).item() == pytest.approx(torch.linalg.matrix_norm(w, 2).item(), abs=1e-3)
    assert u.norm().item() == pytest.approx(1.0) and v.norm().item() == pytest.approx(1.0)


def test_persistent_vectors_converge_one_step_per_penalty_and_conv_kernels_are_out_by_rest():
    net = Net()
    s = converged(net)
    assert set(s.sigma_max()) == {"fc1.weight", "conv.weight", "fc2.weight"}
    assert s.u["conv.weight"].shape == (4,) and s.v["conv.weight"].shape == (27,)
    for n, p in net.named_parameters():
        if p.ndim >= 2:
            assert s.sigma_max()[n].item() == pytest.approx(exact_sigma(p.detach()).item(), abs=1e-3)


def test_sigma_max_is_a_lower_bound_that_extra_iterations_refine_without_changing_the_state():
    net = Net()
    s = Spectral()
    s.setup(net)
    with torch.no_grad():
        net.fc1.weight.mul_(torch.linspace(0.1, 3.0, 7))  # move the top singular direction away from u, v
    u_before = s.u["fc1.weight"].clone()
    rough, refined = s.sigma_max()["fc1.weight"], s.sigma_max(iterations=200)["fc1.weight"]
    exact = exact_sigma(net.fc1.weight.detach()).item()
    assert rough.item() <= exact + 1e-5
    assert refined.item() == pytest.approx(exact, abs=1e-3)
    assert torch.equal(s.u["fc1.weight"], u_before)
    assert not rough.requires_grad


@pytest.mark.parametrize(("k", "bias_weight"), [(2.0, 1.0), (3.0, 0.5), (1.0, 0.0)])
def test_penalty_is_lambda_times_the_formula(k, bias_weight):
    net = Net()
    s = Spectral(spectral_lambda=0.3, k=k, bias_weight=bias_weight)
    s.setup(net)
    pen = s.penalty()
    sig = s.sigma_max()  # the same u, v and weights as the penalty's
    biases = ((net.fc1.bias**2).sum() + (net.fc2.bias**2).sum()).item()  # the conv has no bias
    expected = sum((v.item() ** k - 1) ** 2 for v in sig.values()) + bias_weight * biases
    assert pen.item() == pytest.approx(0.3 * expected, rel=1e-5)
    # converged: the same formula with the exact singular values
    s = converged(net, spectral_lambda=0.3, k=k, bias_weight=bias_weight)
    exact = sum((exact_sigma(p.detach()).item() ** k - 1) ** 2 for p in net.parameters() if p.ndim >= 2)
    exact += bias_weight * biases
    assert s.penalty().item() == pytest.approx(0.3 * exact, rel=1e-4)


def test_gradient_matches_the_svd_based_penalty_once_converged():
    net = Net()
    s = converged(net, spectral_lambda=0.7, k=2.0, bias_weight=0.5)
    params = list(net.parameters())
    got = torch.autograd.grad(s.penalty(), params)
    exact = sum((exact_sigma(p) ** 2 - 1) ** 2 for p in params if p.ndim >= 2)
    exact = 0.7 * (exact + 0.5 * (net.fc1.bias.pow(2).sum() + net.fc2.bias.pow(2).sum()))
    want = torch.autograd.grad(exact, params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-3 * w.abs().max().item())


def test_penalty_and_gradient_equal_the_per_layer_reference_from_the_same_vectors():
    net = Net()
    s = Spectral(spectral_lambda=0.3, k=3.0, bias_weight=0.5, iterations=2)
    s.setup(net)
    start = {n: u.clone() for n, u in s.u.items()}
    params = list(net.parameters())
    got = s.penalty()
    # one layer at a time, as the definition reads: power iteration, then u^T W v with autograd
    want = 0.0
    for n, p in net.named_parameters():
        if p.ndim >= 2:
            u, v = power_iteration(as_matrix(p.detach()), start[n], 2)
            torch.testing.assert_close(s.u[n], u, rtol=1e-6, atol=1e-7)
            want = want + ((u @ as_matrix(p) @ v) ** 3 - 1) ** 2
    want = 0.3 * (want + 0.5 * ((net.fc1.bias**2).sum() + (net.fc2.bias**2).sum()))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    for a, b in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * b.abs().max().item())


def test_bias_weight_zero_leaves_biases_alone_and_layers_select_weights():
    net = Net()
    s = Spectral(bias_weight=0.0, layers=["fc1.*"])
    s.setup(net)
    assert list(s.sigma_max()) == ["fc1.weight"]
    s.penalty().backward()
    assert net.fc1.weight.grad is not None and net.fc1.bias.grad is None and net.fc2.weight.grad is None
    with_bias = Spectral(layers=["fc1.*"])
    with_bias.setup(net)
    with_bias.penalty().backward()
    assert net.fc1.bias.grad is not None and net.fc2.bias.grad is None


def test_a_layer_pattern_that_matches_nothing_names_the_candidates():
    with pytest.raises(ValueError, match=r"match no weight matrix.*fc1\.weight"):
        Spectral(layers=["backbone.*"]).setup(Net())


def test_iterations_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match="'iterations' must be >= 1"):
        Spectral(iterations=0)


def test_loss_terms_name_the_penalty_spectral():
    net = Net()
    s = Spectral()
    assert s.loss_terms(None) == {}
    s.setup(net)
    assert list(s.loss_terms(None)) == ["spectral"]


@pytest.mark.parametrize("setup_first", [True, False])
def test_state_dict_round_trip_keeps_the_power_iteration_vectors(setup_first):
    net = Net()
    s = Spectral(iterations=2)
    s.setup(net)
    for _ in range(3):
        s.penalty()
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    restored = Spectral(iterations=2)
    if setup_first:
        restored.setup(net)
        restored.load_state_dict(torch.load(buf))
    else:
        restored.load_state_dict(torch.load(buf))
        restored.setup(net)
    for n in s.u:
        assert torch.equal(restored.u[n], s.u[n]) and torch.equal(restored.v[n], s.v[n])
    assert restored.penalty().item() == s.penalty().item()


# -- in a run ------------------------------------------------------------------------
HOT = ["train.lr=0.5", "train.epochs=3"]  # large steps: the naive run's sigma_max grows to about 3


def test_spectral_run_logs_its_term_and_keeps_sigma_max_nearer_one_than_naive(tiny):
    spectral = build(compose(tiny + HOT + ["strategy=spectral", "strategies.spectral.spectral_lambda=0.01"]))
    fit(spectral)
    naive = build(compose(tiny + HOT + ["strategy=naive"]))
    fit(naive)
    assert all(row["loss/spectral"] > 0 for row in spectral.module.loss_log)
    weights = [n for n, p in naive.module.named_parameters() if p.ndim >= 2]
    assert set(spectral.module.strategies["spectral"].sigma_max()) == set(weights)
    for n in weights:
        s_reg = exact_sigma(dict(spectral.module.named_parameters())[n].detach()).item()
        s_naive = exact_sigma(dict(naive.module.named_parameters())[n].detach()).item()
        assert abs(s_reg - 1) < 0.75 * abs(s_naive - 1), n
