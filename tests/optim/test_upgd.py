"""UPGD: the foreach step against a per-parameter loop of the documented equations, the
utility, the eta <= 0 guard, state_dict round trips and the gating at saturation."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clframe.optim import UPGD


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))


def set_grads(model: nn.Module, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)
    return [p.grad.clone() for p in model.parameters()]


class NaiveUPGD:
    """The documented equations, one parameter at a time (the ground truth)."""

    def __init__(self, params, lr, weight_decay, beta_utility, sigma, protect, scaling, eta_from):
        self.params = [p.detach().clone() for p in params]
        self.u = [torch.zeros_like(p) for p in self.params]
        self.t = 0
        self.lr, self.wd, self.beta, self.sigma = lr, weight_decay, beta_utility, sigma
        self.protect, self.scaling, self.eta_from = protect, scaling, eta_from

    def step(self, grads):
        self.t += 1
        beta = self.beta
        for i, (w, g) in enumerate(zip(self.params, grads)):
            self.u[i] = beta * self.u[i] + (1 - beta) * (-g * w)
        u_hat = [u / (1 - beta**self.t) for u in self.u]
        # the noise is drawn as UPGD draws it: one randn over all elements, split in order
        z = torch.randn(sum(w.numel() for w in self.params)) if self.sigma > 0 else None
        offset = 0
        if self.scaling == "global":
            eta = max(float(u.max()) for u in (self.u if self.eta_from == "uncorrected" else u_hat))
        for i, (w, g) in enumerate(zip(self.params, grads)):
            if self.scaling == "global":
                s = torch.sigmoid(u_hat[i] / eta)
            else:
                s = torch.sigmoid(F.normalize(u_hat[i], dim=-1))
            xi = torch.zeros_like(w)
            if z is not None:
                xi = self.sigma * z[offset : offset + w.numel()].view(w.shape)
            offset += w.numel()
            if self.protect:
                self.params[i] = (1 - self.lr * self.wd) * w - self.lr * (g + xi) * (1 - s)
            else:
                self.params[i] = (1 - self.lr * self.wd) * w - self.lr * (g + xi * (1 - s))


# -- (a) against the per-parameter loop -------------------------------------------
@pytest.mark.parametrize("sigma", [0.0, 0.05])
@pytest.mark.parametrize("eta_from", ["uncorrected", "corrected"])
@pytest.mark.parametrize("scaling", ["global", "local"])
@pytest.mark.parametrize("protect", [True, False])
def test_steps_match_the_per_parameter_equations(protect, scaling, eta_from, sigma):
    settings = dict(lr=0.1, weight_decay=0.05, beta_utility=0.9, sigma=sigma, protect=protect, scaling=scaling,
                    eta_from=eta_from)
    model = net()
    opt = UPGD(model.parameters(), **settings)
    naive = NaiveUPGD(model.parameters(), **settings)
    for k in range(3):
        grads = set_grads(model, seed=10 + k)
        torch.manual_seed(100 + k)
        opt.step()
        torch.manual_seed(100 + k)
        naive.step(grads)
        for p, expected in zip(model.parameters(), naive.params):
            torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)
    moved = [not torch.equal(p.detach(), q) for p, q in zip(net().parameters(), model.parameters())]
    assert all(moved)  # biases included


def test_defaults_follow_the_reference_settings():
    opt = UPGD([nn.Parameter(torch.zeros(2))])
    d = opt.defaults
    assert (d["lr"], d["weight_decay"], d["beta_utility"], d["sigma"]) == (0.01, 0.0, 0.999, 0.001)
    assert (d["protect"], d["scaling"], d["eta_from"]) == (True, "global", "uncorrected")


def test_the_noise_is_reproducible_by_seed():
    runs = []
    for _ in range(2):
        model = net()
        opt = UPGD(model.parameters(), sigma=0.5)
        torch.manual_seed(3)
        for k in range(2):
            set_grads(model, seed=k)
            opt.step()
        runs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_local_scaling_normalises_a_conv_kernel_per_output_filter():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4, 3, 2, 2))
    w0 = w.detach().clone()
    w.grad = torch.randn(4, 3, 2, 2)
    UPGD([w], lr=0.1, beta_utility=0.9, sigma=0.0, scaling="local").step()
    u_hat = -w.grad * w0
    s = torch.sigmoid(F.normalize(u_hat.flatten(1), dim=1)).view_as(w0)
    torch.testing.assert_close(w.detach(), w0 - 0.1 * w.grad * (1 - s))


# -- (b) the utility ----------------------------------------------------------------
def test_utility_is_the_bias_corrected_average_of_minus_g_times_w():
    w = nn.Parameter(torch.tensor([2.0, -1.0, 0.5, 0.0]))
    w.grad = torch.tensor([1.0, 1.0, -2.0, 3.0])
    beta = 0.8
    opt = UPGD([w], lr=0.0, beta_utility=beta, sigma=0.0)  # lr 0: w and g stay fixed
    expected_u_hat = torch.tensor([-2.0, 1.0, 1.0, 0.0])
    for t in range(1, 5):
        opt.step()
        state = opt.state[w]
        assert state["step"] == t
        torch.testing.assert_close(state["utility"], (1 - beta**t) * expected_u_hat)
        torch.testing.assert_close(state["utility"] / (1 - beta**t), expected_u_hat)


def test_weights_pulled_from_zero_are_useful_and_weights_pushed_to_zero_are_not():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(6))
    opt = UPGD([w], lr=0.0, beta_utility=0.9, sigma=0.0)
    # loss 0.5 ||w - c||^2: with c = 2w zeroing a weight raises the loss (utility w^2 > 0),
    # with c = 0 it lowers it (utility -w^2 < 0)
    for c, sign in ((2 * w.detach(), 1), (torch.zeros(6), -1)):
        opt.state.clear()
        w.grad = w.detach() - c
        opt.step()
        u_hat = opt.state[w]["utility"] / (1 - 0.9)
        torch.testing.assert_close(u_hat, sign * w.detach() ** 2)


# -- (c) the eta <= 0 guard ----------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.0, 0.1])
def test_all_zero_gradients_give_finite_weights_and_gate_half(sigma):
    model = net()
    before = [p.detach().clone() for p in model.parameters()]
    opt = UPGD(model.parameters(), lr=0.1, sigma=sigma)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    torch.manual_seed(4)
    opt.step()
    torch.manual_seed(4)
    z = torch.randn(sum(p.numel() for p in before)).split([p.numel() for p in before])
    for p, w, zi in zip(model.parameters(), before, z):
        assert torch.isfinite(p).all()
        # eta = 0: every utility is 0, so s = 0.5 and the step is -lr * xi * 0.5
        torch.testing.assert_close(p.detach(), w - 0.1 * sigma * zi.view(w.shape) * 0.5)


def test_negative_eta_leaves_nothing_protected():
    model = net()
    before = [p.detach().clone() for p in model.parameters()]
    opt = UPGD(model.parameters(), lr=0.1, sigma=0.0)
    for p in model.parameters():
        p.grad = p.detach() + 0.5 * torch.sign(p.detach())  # -g * w < 0 everywhere: eta < 0
    opt.step()
    for p, w in zip(model.parameters(), before):
        # s = 0: the plain SGD step
        torch.testing.assert_close(p.detach(), w - 0.1 * (w + 0.5 * torch.sign(w)))


# -- (d) state_dict --------------------------------------------------------------------
def run_steps(model, opt, seeds):
    for k in seeds:
        set_grads(model, seed=k)
        torch.manual_seed(1000 + k)
        opt.step()


@pytest.mark.parametrize("scaling", ["global", "local"])
def test_state_dict_round_trip_continues_identically(scaling):
    settings = dict(lr=0.05, weight_decay=0.01, beta_utility=0.99, sigma=0.1, scaling=scaling, eta_from="corrected")
    model = net()
    opt = UPGD(model.parameters(), **settings)
    run_steps(model, opt, range(3))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    restored = net(seed=1)
    restored.load_state_dict(saved["model"])
    restored_opt = UPGD(restored.parameters())  # the saved groups bring their own settings
    restored_opt.load_state_dict(saved["opt"])
    assert restored_opt.param_groups[0]["sigma"] == 0.1 and restored_opt.param_groups[0]["scaling"] == scaling
    run_steps(model, opt, range(3, 6))
    run_steps(restored, restored_opt, range(3, 6))
    for a, b in zip(model.parameters(), restored.parameters()):
        assert torch.equal(a, b)
    assert restored_opt.state[next(restored.parameters())]["step"] == 6


# -- (e) at saturation ---------------------------------------------------------------
def saturated(protect: bool, scaling: str) -> tuple[nn.Parameter, UPGD, torch.Tensor]:
    """A weight vector whose bias correction has saturated (lr 0 until then), ready for a real step."""
    w = nn.Parameter(torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]))
    w.grad = torch.tensor([[-1.0, -1.0, -1.0, 1.0, -0.5]])  # utilities 2, 1, 0.5, 0, -0.5
    opt = UPGD([w], lr=0.0, beta_utility=0.5, sigma=0.0, protect=protect, scaling=scaling)
    for _ in range(60):
        opt.step()
    opt.param_groups[0]["lr"] = 0.1
    return w, opt, (-w.grad * w).detach()[0]


@pytest.mark.parametrize("scaling", ["global", "local"])
def test_protecting_shrinks_the_step_of_useful_weights(scaling):
    w, opt, u = saturated(protect=True, scaling=scaling)
    w0 = w.detach().clone()
    opt.step()
    ratio = ((w.detach() - w0) / (-0.1 * w.grad))[0]  # of the plain SGD step
    s = torch.sigmoid(u / u.max()) if scaling == "global" else torch.sigmoid(u / u.norm())
    torch.testing.assert_close(ratio, 1 - s)
    # the more useful a weight, the smaller its step; the most useful one moves about 1 - sigmoid(1) of SGD
    assert (ratio.diff() > 0).all()
    if scaling == "global":
        assert ratio[0].item() == pytest.approx(1 - torch.sigmoid(torch.tensor(1.0)).item(), rel=1e-5)
    assert ratio[3].item() == pytest.approx(0.5)


def test_without_noise_the_non_protecting_step_is_plain_sgd():
    w, opt, _ = saturated(protect=False, scaling="global")
    w0 = w.detach().clone()
    opt.step()
    torch.testing.assert_close(w.detach(), w0 - 0.1 * w.grad)


@pytest.mark.parametrize("name, value", [("lr", -1.0), ("beta_utility", 1.0), ("sigma", -0.1),
                                         ("scaling", "per_row"), ("eta_from", "paper")])
def test_bad_settings_are_rejected(name, value):
    with pytest.raises(ValueError, match=name):
        UPGD([nn.Parameter(torch.zeros(2))], **{name: value})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("scaling", ["global", "local"])
def test_cuda_step_matches_cpu_and_does_not_sync(scaling):
    model, cuda_model = net(), net().cuda()
    opt = UPGD(model.parameters(), lr=0.1, sigma=0.0, scaling=scaling)
    cuda_opt = UPGD(cuda_model.parameters(), lr=0.1, sigma=0.0, scaling=scaling)
    for k in range(3):
        for p, q in zip(set_grads(model, seed=k), cuda_model.parameters()):
            q.grad = p.cuda()
        opt.step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            cuda_opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for p, q in zip(model.parameters(), cuda_model.parameters()):
        torch.testing.assert_close(p.detach(), q.detach().cpu(), rtol=1e-5, atol=1e-6)
