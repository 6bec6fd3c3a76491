"""tau_rnn: a leaky RNN with one trainable timescale per neuron."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from clframe.data.sequences import with_lengths
from clframe.models.backbones.tau_rnn import TauRNN, tau_scan


def sequences(n: int = 3, steps: int = 6, features: int = 2, dtype: torch.dtype = torch.float) -> torch.Tensor:
    return with_lengths(torch.randn(n, steps, features, dtype=dtype), torch.tensor([6, 2, 4][:n]))


def naive(net: TauRNN, x: torch.Tensor) -> torch.Tensor:
    """Every state of the stacked layers, one neuron and one step at a time."""
    h_in = x[..., :-1]
    for layer in net.layers:
        tau = layer.tau.detach().clamp(min=1)
        w_hh = layer.w_hh.weight.detach().clone()
        w_hh.fill_diagonal_(0)
        w_in, b = layer.w_in.weight.detach(), layer.w_in.bias.detach()
        n, steps, hidden = h_in.shape[0], h_in.shape[1], len(tau)
        h = torch.zeros(n, hidden, dtype=x.dtype)
        states = []
        for t in range(steps):
            new = torch.empty_like(h)
            for j in range(hidden):
                drive = w_hh[j] @ h.T + w_in[j] @ h_in[:, t].T + b[j]  # [n]
                new[:, j] = F.leaky_relu((1 - 1 / tau[j]) * h[:, j] + drive / tau[j], layer.slope)
            h = new
            states.append(h)
        h_in = torch.stack(states, 1)
    return h_in


@pytest.mark.parametrize("num_layers", [1, 2])
def test_forward_matches_the_step_by_step_equation(num_layers):
    torch.manual_seed(0)
    net = TauRNN((6, 3), hidden=4, num_layers=num_layers, readout="every", slope=0.1).double()
    x = sequences(dtype=torch.double)
    assert torch.allclose(net(x), naive(net, x), atol=1e-10)


def test_last_readout_is_the_state_at_each_sequence_length_and_ignores_the_padding():
    torch.manual_seed(0)
    net = TauRNN((6, 3), hidden=4)
    x = sequences()
    every = naive(net, x)
    out = net(x)
    assert torch.allclose(out, torch.stack([every[0, 5], every[1, 1], every[2, 3]]), atol=1e-5)
    noisy = x.clone()
    noisy[1, 2:, :2] = 9.0
    assert torch.allclose(net(noisy), out, atol=1e-6)


def test_the_diagonal_of_w_hh_has_no_effect_and_no_gradient():
    torch.manual_seed(0)
    net = TauRNN((6, 3), hidden=4, readout="every")
    x = sequences()
    before = net(x)
    with torch.no_grad():
        net.layers[0].w_hh.weight.diagonal().fill_(50.0)
    out = net(x)
    assert torch.allclose(out, before, atol=1e-6)
    out.sum().backward()
    grad = net.layers[0].w_hh.weight.grad
    assert (grad.diagonal() == 0).all() and grad.abs().sum() > 0


def test_tau_below_one_acts_as_one():
    torch.manual_seed(0)
    net = TauRNN((6, 3), hidden=4, readout="every")
    x = sequences()
    with torch.no_grad():
        net.layers[0].tau[1] = 1.0
    one = net(x)
    with torch.no_grad():
        net.layers[0].tau[1] = 0.5
    assert torch.allclose(net(x), one, atol=1e-6)
    tau = net.timescales()[0]
    assert tau[1].item() == 1.0 and (tau >= 1).all()
    assert net.layers[0].tau[1].item() == 0.5  # the raw parameter is left as it is


def test_tau_is_trained_only_with_train_tau():
    torch.manual_seed(0)
    net = TauRNN((6, 3), hidden=4)
    net(sequences()).pow(2).sum().backward()
    assert net.layers[0].tau.requires_grad and net.layers[0].tau.grad.abs().sum() > 0
    frozen = TauRNN((6, 3), hidden=4, train_tau=False)
    assert not frozen.layers[0].tau.requires_grad
    assert all(n != "layers.0.tau" for n, p in frozen.named_parameters() if p.requires_grad)


def test_scripted_loop_matches_the_eager_one():
    try:
        torch.jit.script(tau_scan)
    except Exception as e:  # noqa: BLE001 - TorchScript missing or unsupported on this build
        pytest.skip(f"torch.jit.script unavailable: {e}")
    torch.manual_seed(0)
    eager = TauRNN((6, 3), hidden=4, num_layers=2, readout="every")
    scripted = TauRNN((6, 3), hidden=4, num_layers=2, readout="every", loop="script")
    scripted.load_state_dict(eager.state_dict())
    x = sequences()
    assert torch.allclose(scripted(x), eager(x), atol=1e-6)


def test_tau_scan_gradients_are_correct():
    torch.manual_seed(0)
    u = torch.randn(5, 2, 3, dtype=torch.double, requires_grad=True)
    m = (0.5 * torch.randn(3, 3, dtype=torch.double)).requires_grad_()
    h0 = torch.randn(2, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, m, h0: tau_scan(u, m, h0, 0.1), (u, m, h0))


def test_diagnostics_summarise_tau_per_layer():
    torch.manual_seed(0)
    net = TauRNN((6, 3), hidden=5, num_layers=2)
    d = net.diagnostics()
    assert {"tau/l0/mean", "tau/l0/max", "tau/l1/mean", "tau/l1/max"} <= d.keys()
    tau = net.timescales()
    assert d["tau/l0/mean"] == pytest.approx(tau[0].mean().item())
    assert d["tau/l1/max"] == pytest.approx(tau[1].max().item())
    assert all(1 <= d[f"tau/l{i}/min"] <= d[f"tau/l{i}/median"] <= d[f"tau/l{i}/max"] <= 2 for i in (0, 1))


@pytest.mark.parametrize("num_layers", [1, 2])
def test_silenced_units_stay_at_zero(num_layers):
    torch.manual_seed(0)
    net = TauRNN((6, 3), hidden=5, num_layers=num_layers, readout="every")
    x = sequences()
    before = net(x)
    units = torch.tensor([1, 4])
    for layer in range(num_layers):
        net.silence(layer, units)
    after = net(x)
    assert (after[..., units] == 0).all()
    assert (after[..., [0, 2, 3]] != 0).any() and not torch.allclose(after, before)
    if num_layers == 2:
        assert (net.layers[1].w_in.weight[:, units] == 0).all()


def test_a_scripted_model_deepcopies_and_pickles_after_a_forward():
    try:
        torch.jit.script(tau_scan)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"torch.jit.script unavailable: {e}")
    torch.manual_seed(0)
    net = TauRNN((6, 3), hidden=4, loop="script")
    x = sequences()
    out = net(x)
    twin = copy.deepcopy(net)
    again = pickle.loads(pickle.dumps(net))
    assert net._scan is not None  # the original keeps its compiled loop
    assert torch.allclose(twin(x), out) and torch.allclose(again(x), out)
    assert twin.loop == "script" and twin._scan is not None
