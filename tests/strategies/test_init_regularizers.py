"""Regularizers towards the initialisation: wasserstein_init, l2_init and shrink_perturb."""

from __future__ import annotations

import copy
import io
from types import SimpleNamespace

import pytest
import torch
from clframe.strategies.l2_init import L2Init
from clframe.strategies.shrink_perturb import ShrinkPerturb
from clframe.strategies.wasserstein_init import WassersteinInit, sorted_flat
from torch import nn

from clframe.config import compose
from clframe.errors import ConfigError
from clframe.run.runner import build, fit


class Hand(nn.Module):
    """Hand-made weights: ``a`` [3] and ``b`` [2, 2]."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([3.0, 1.0, 2.0]))
        self.b = nn.Parameter(torch.tensor([[1.0, -1.0], [0.0, 2.0]]))


class Net(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)
        nn.init.zeros_(self.fc2.bias)


def set_(p: nn.Parameter, values: list) -> None:
    with torch.no_grad():
        p.copy_(torch.tensor(values))


def round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf)


# -- wasserstein_init ----------------------------------------------------------------
def test_wasserstein_is_zero_at_init_and_for_any_permutation_of_the_initial_values():
    net = Net()
    w = WassersteinInit(wasserstein_lambda=5.0)
    w.setup(net)
    assert w.penalty().item() == 0.0
    with torch.no_grad():
        net.fc1.weight.copy_(net.fc1.weight.flatten()[torch.randperm(30)].view(5, 6))
    assert w.penalty().item() == pytest.approx(0.0, abs=1e-12)


def test_wasserstein_is_lambda_times_the_mean_squared_sorted_difference_per_tensor():
    net = Hand()
    w = WassersteinInit(wasserstein_lambda=0.5)
    w.setup(net)
    set_(net.a, [0.0, 5.0, 1.0])  # sorted [0, 1, 5] against [1, 2, 3]: mean of 1, 1, 4 = 2
    set_(net.b, [[1.0, -1.0], [0.0, 4.0]])  # sorted [-1, 0, 1, 4] against [-1, 0, 1, 2]: mean 4 / 4 = 1
    assert w.penalty().item() == pytest.approx(0.5 * (2.0 + 1.0))
    # the gradient goes to the weight matched with each sorted position: 2 lambda / n (w - w0_matched)
    grad = torch.autograd.grad(w.penalty(), [net.a])[0]
    torch.testing.assert_close(grad, 0.5 * 2 / 3 * torch.tensor([0.0 - 1.0, 5.0 - 3.0, 1.0 - 2.0]))
    assert list(w.loss_terms(None)) == ["wasserstein_init"]


def test_wasserstein_never_exceeds_the_l2_distance_per_weight():
    net = Net()
    w, l2 = WassersteinInit(wasserstein_lambda=1.0), L2Init(l2_lambda=1.0)
    w.setup(net)
    l2.setup(net)
    with torch.no_grad():
        net.fc1.weight.add_(0.3 * torch.randn(5, 6))
    d_w = w.penalty().item()
    d_l2 = ((net.fc1.weight - l2.init["fc1.weight"]) ** 2).mean().item()
    assert 0 < d_w < d_l2


def test_wasserstein_and_its_gradient_equal_the_per_tensor_sort_reference():
    net = Net()
    w = WassersteinInit(wasserstein_lambda=0.7)
    w.setup(net)
    init = {n: sorted_flat(p.detach()) for n, p in net.named_parameters()}
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    params = list(net.parameters())
    # the definition: sort each tensor (differentiably) and compare with its sorted initial values
    want = 0.7 * sum(((sorted_flat(p) - init[n]) ** 2).mean() for n, p in net.named_parameters())
    got = w.penalty()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    for a, b in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("setup_first", [True, False])
def test_wasserstein_state_keeps_the_sorted_initial_weights(setup_first):
    net = Hand()
    w = WassersteinInit()
    w.setup(net)
    set_(net.a, [0.0, 5.0, 1.0])
    restored = WassersteinInit()
    if setup_first:
        restored.setup(net)  # a resumed run sets up on other weights, then loads
        restored.load_state_dict(round_trip(w.state_dict()))
    else:
        restored.load_state_dict(round_trip(w.state_dict()))
        restored.setup(net)
    torch.testing.assert_close(restored.sorted_init["a"], torch.tensor([1.0, 2.0, 3.0]))
    assert restored.penalty().item() == pytest.approx(w.penalty().item())


# -- l2_init -------------------------------------------------------------------------
def test_l2_init_is_zero_at_init_and_lambda_times_the_squared_distance():
    net = Hand()
    r = L2Init(l2_lambda=0.25)
    r.setup(net)
    assert r.penalty().item() == 0.0
    set_(net.a, [0.0, 5.0, 1.0])  # (3)^2 + (4)^2 + (1)^2 = 26
    set_(net.b, [[1.0, -1.0], [0.0, 4.0]])  # 4
    assert r.penalty().item() == pytest.approx(0.25 * 30.0)
    grad = torch.autograd.grad(r.penalty(), [net.a])[0]
    torch.testing.assert_close(grad, 2 * 0.25 * torch.tensor([-3.0, 4.0, -1.0]))
    assert list(r.loss_terms(None)) == ["l2_init"]


def test_l2_init_and_its_gradient_equal_the_per_parameter_reference():
    net = Net()
    r = L2Init(l2_lambda=0.3)
    r.setup(net)
    init = {n: p.detach().clone() for n, p in net.named_parameters()}
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g))
    params = list(net.parameters())
    want = 0.3 * sum(((p - init[n]) ** 2).sum() for n, p in net.named_parameters())
    got = r.penalty()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    for a, b in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_l2_init_anchor_is_a_copy_and_survives_a_state_round_trip():
    net = Hand()
    r = L2Init(l2_lambda=2.0)
    r.setup(net)
    set_(net.a, [0.0, 0.0, 0.0])
    assert torch.equal(r.init["a"], torch.tensor([3.0, 1.0, 2.0]))
    restored = L2Init(l2_lambda=2.0)
    restored.setup(net)
    restored.load_state_dict(round_trip(r.state_dict()))
    assert restored.penalty().item() == pytest.approx(2.0 * 14.0)


# -- shrink_perturb ------------------------------------------------------------------
def expected_after(net: nn.Module, init_std: dict, shrink: float, perturb: float, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {n: shrink * p.detach() + perturb * init_std[n] * torch.randn(p.shape, generator=g)
            for n, p in net.named_parameters()}


def test_shrink_perturb_scales_the_weights_and_adds_noise_of_the_init_scale():
    net = Net()
    sp = ShrinkPerturb(shrink=0.8, perturb=0.1, seed=3)
    sp.setup(net)
    std = {n: p.detach().std() for n, p in net.named_parameters()}
    assert std["fc2.bias"] == 0 and std["fc1.weight"] > 0
    for n in std:
        torch.testing.assert_close(sp.init_std[n], std[n])
    want = expected_after(net, std, 0.8, 0.1, seed=3)
    sp.apply()
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), want[n])
    # a zero-initialised bias is only shrunk: it stays zero
    assert torch.equal(net.fc2.bias.detach(), torch.zeros(3))


def test_shrink_perturb_without_noise_is_a_pure_shrink_and_one_and_zero_change_nothing():
    net = Net()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    sp = ShrinkPerturb(shrink=1.0, perturb=0.0)
    sp.setup(net)
    sp.apply()
    for n, p in net.named_parameters():
        assert torch.equal(p.detach(), before[n])
    sp = ShrinkPerturb(shrink=0.5, perturb=0.0)
    sp.setup(net)
    sp.apply()
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), 0.5 * before[n])


def test_shrink_perturb_is_reproducible_by_seed():
    def after(seed: int) -> torch.Tensor:
        net = Net()
        sp = ShrinkPerturb(shrink=0.9, perturb=0.5, seed=seed)
        sp.setup(net)
        sp.apply()
        sp.apply()
        return net.fc1.weight.detach()

    assert torch.equal(after(1), after(1))
    assert not torch.equal(after(1), after(2))


def test_shrink_perturb_every_n_steps():
    net = Net()
    sp = ShrinkPerturb(shrink=0.5, perturb=0.0, every=3)
    sp.setup(net)
    w0 = net.fc1.weight.detach().clone()
    seen = []
    for step in range(6):
        sp.after_optimizer_step(SimpleNamespace(step=step))
        seen.append(round((net.fc1.weight.detach() / w0).mean().item(), 6))
    assert seen == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    sp.on_experience_start(SimpleNamespace(index=3), net)  # step mode ignores experiences
    assert net.fc1.weight.detach().div(w0).mean().item() == pytest.approx(0.25)


def test_shrink_perturb_at_experience_starts_skips_the_first_experience():
    net = Net()
    sp = ShrinkPerturb(shrink=0.5, perturb=0.0, when="experience")
    sp.setup(net)
    w0 = net.fc1.weight.detach().clone()
    sp.on_experience_start(SimpleNamespace(index=0), net)
    sp.after_optimizer_step(SimpleNamespace(step=0))
    assert torch.equal(net.fc1.weight.detach(), w0)
    sp.on_experience_start(SimpleNamespace(index=1), net)
    torch.testing.assert_close(net.fc1.weight.detach(), 0.5 * w0)


def test_shrink_perturb_state_continues_the_same_noise():
    net = Net()
    sp = ShrinkPerturb(shrink=0.9, perturb=0.3, seed=4)
    sp.setup(net)
    sp.apply()
    state = round_trip(sp.state_dict())
    twin = copy.deepcopy(net)
    restored = ShrinkPerturb(shrink=0.9, perturb=0.3, seed=99)
    restored.setup(Net(seed=5))  # a resumed run sets up on freshly built weights, then loads
    restored.load_state_dict(state)
    restored.setup(twin)
    sp.apply()
    restored.apply()
    torch.testing.assert_close(twin.fc1.weight, net.fc1.weight, rtol=0, atol=0)


@pytest.mark.parametrize(("kw", "key"), [({"shrink": 1.5}, "shrink"), ({"perturb": -0.1}, "perturb"),
                                         ({"every": 0}, "every")])
def test_shrink_perturb_rejects_bad_settings(kw, key):
    with pytest.raises(ConfigError, match=f"'{key}' must be"):
        ShrinkPerturb(**kw)


# -- in a run ------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "term"), [("wasserstein_init", "loss/wasserstein_init"),
                                            ("l2_init", "loss/l2_init"), ("shrink_perturb", None)])
def test_runs_with_defaults_and_logs_its_term(tiny, name, term):
    built = build(compose(tiny + [f"strategy={name}"]))
    fit(built)
    log = built.module.loss_log
    if term is None:
        assert all(set(row) == {"step", "experience", "loss/task"} for row in log)
    else:
        assert all(row[term] > 0 for row in log)


def test_shrink_perturb_in_a_run_moves_the_weights_away_from_naive(tiny):
    runs = {}
    for name in ("naive", "shrink_perturb"):
        runs[name] = build(compose(tiny + [f"strategy={name}"]))
        fit(runs[name])
    w = {k: dict(b.module.named_parameters())["backbone.net.1.weight"].detach() for k, b in runs.items()}
    # small per-step noise: a visible but small departure from the same run without it
    diff = (w["shrink_perturb"] - w["naive"]).norm().item()
    assert 0 < diff < 0.2 * w["naive"].norm().item()
