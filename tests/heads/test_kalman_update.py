"""The Kalman head's fused step (``clframe.models.heads.kalman_update``) computes the numbers of the
plain formulation it replaced, and its preallocated scratch follows the state through loads, ``to()``
and copies."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from clframe.models.heads.kalman import KalmanHead


def reference_step(head: KalmanHead, st: dict, h, y, w=None):
    """One training step as first written, one plain op per term (the ground truth): the predictive
    log-likelihood before the update, the closed-form gradients, the drift, the Joseph-form update and
    the head's SGD step, on the float64 state ``st`` (mean, cov, hyper, updates), which it updates."""
    phi = h.double().flatten(1)
    phi = F.pad(phi, (0, 1), value=1.0) if head.bias else phi
    gamma, noise, temp = torch.sigmoid(st["hyper"][0]), st["hyper"][1].exp(), st["hyper"][2].exp()
    mu0, pa = phi @ st["mean"], phi @ st["cov"]
    c = head.prior_var * (phi * phi).sum(-1)
    d = (pa * phi).sum(-1) - c
    v = c + gamma**2 * d
    mu = gamma * mu0
    target = y.reshape(len(y), -1).double() if head.regression else F.one_hot(y, head.n_outputs).double()
    s = v + noise
    r = target - mu
    r2, n_out = (r * r).sum(-1), target.shape[1]
    gauss = -0.5 * (n_out * torch.log(2 * math.pi * s) + r2 / s)
    dl_ds = 0.5 * (r2 / s - n_out) / s
    dl_dgamma = dl_ds * 2 * gamma * d + (r * mu0).sum(-1) / s

    def red(x):
        return x.mean() if w is None else (x * w.double()).sum()
    dtemp = torch.zeros((), dtype=torch.float64)
    if head.regression:
        out, loglik = mu, gauss
    else:
        if head.predictive == "probit":
            beta = math.pi * v / (8 * temp**2)
            z = mu / (temp * torch.sqrt(1 + beta)).unsqueeze(-1)
            logp = F.log_softmax(z, -1)
            p = logp.exp()
            dlog_t = -(z.gather(1, y[:, None])[:, 0] - (p * z).sum(-1)) / (1 + beta)
        else:
            z = (mu + v.clamp_min(0).sqrt()[:, None] * head.eps[:, None, :]) / temp  # [S, B, K]
            p = torch.softmax(z, -1)
            logp = p.mean(0).clamp_min(torch.finfo(p.dtype).tiny).log()
            rows = torch.arange(len(y))
            p_y, z_y = p[:, rows, y], z[:, rows, y]
            dlog_t = -(p_y * (z_y - (p * z).sum(-1))).sum(0) / p_y.sum(0)
        out, loglik = logp, logp.gather(1, y[:, None])[:, 0]
        if head.learn_temperature:
            dtemp = red(dlog_t)
    grads = torch.stack([red(dl_dgamma) * gamma * (1 - gamma), red(dl_ds) * noise, dtemp])
    gaussian = head.regression or head.backbone_objective == "gaussian"
    loss = -red(gauss if gaussian else loglik)

    g2 = gamma**2
    q = (1 - g2) * head.prior_var
    G = g2 * pa + q * phi
    mean = gamma * st["mean"]
    A = g2 * st["cov"] + q * torch.eye(len(st["cov"]), dtype=torch.float64)
    resid = target - gamma * mu0
    if len(phi) == 1:
        s1 = (G * phi).sum() + noise
        K = G / s1
        mean = mean + K.T @ resid
        A = A + torch.cat([s1 * K - G, -K]).T @ torch.cat([K, G])
    else:
        S = G @ phi.T + noise * torch.eye(len(phi), dtype=torch.float64)
        Kt = torch.cholesky_solve(G, torch.linalg.cholesky(S))
        mean = mean + Kt.T @ resid
        KG = Kt.T @ G
        A = A - (KG + KG.T) + Kt.T @ (S @ Kt)
    st["updates"] += 1
    if st["updates"] % head.symmetrize_every == 0:
        A = (A + A.T) / 2
    st["mean"], st["cov"] = mean, A
    st["hyper"] = st["hyper"] + head.step_sizes * grads.clamp(-head.max_grad, head.max_grad)
    return out.float(), loss.float(), loglik.float()


def state_of(head: KalmanHead) -> dict:
    return {"mean": head.mean.clone(), "cov": head.cov.clone(), "hyper": head.hyper.detach().clone(),
            "updates": head.updates}


def stream(batch: int, n: int, m: int, k: int, regression: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        # features of different scales, so the posterior is far from its isotropic start
        h = torch.randn(batch, m, generator=g) * torch.logspace(-1, 1, m)
        y = torch.randn(batch, k, generator=g) if regression else torch.randint(k, (batch,), generator=g)
        w = torch.rand(batch, generator=g)
        yield h, y, w


CASES = {
    "mc": {},
    "probit": {"predictive": "probit"},
    "regression": {},
    "weighted": {},
    "gaussian_objective": {"backbone_objective": "gaussian"},
    "fixed": {"learn_gamma": False, "learn_temperature": False, "prior_var": 2.0, "bias": False},
}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("case", list(CASES))
def test_the_fused_step_computes_the_plain_formulation(case, batch):
    # 40 steps: the covariance is symmetrised twice (every 16 updates), gamma, s^2 and T move
    m, k = 9, 4
    head = KalmanHead(m, k, gamma=0.9, temperature=0.5, lr_gamma=0.3, mc_samples=24, **CASES[case])
    head.set_objective("regression" if case == "regression" else "classification")
    st = state_of(head)
    for h, y, w in stream(batch, 40, m, k, case == "regression"):
        w = w if case == "weighted" else None
        got = head.online_step(h, y, torch.zeros(batch, dtype=torch.long), w)
        head.observe()
        expected = reference_step(head, st, h, y, w)
        for a, b in zip(got, expected):
            assert a.dtype == torch.float32 and a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(head.mean, st["mean"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(head.cov, st["cov"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(head.hyper.detach(), st["hyper"], rtol=1e-10, atol=1e-12)


def run(head: KalmanHead, data) -> list[torch.Tensor]:
    outs = []
    for h, y, _ in data:
        outs += head.online_step(h, y, torch.zeros(len(y), dtype=torch.long))
        head.observe()
    return outs


@pytest.mark.parametrize("how", ["load_state_dict", "assign", "to", "deepcopy"])
def test_a_head_continues_exactly_after_its_state_is_loaded_moved_or_copied(how):
    data = list(stream(1, 30, 6, 3, False))
    a = KalmanHead(6, 3)
    run(a, data[:10])
    if how == "to":
        a.to(torch.float32).to(torch.float64)  # new buffers, and a new .data of hyper
    if how == "deepcopy":
        b = copy.deepcopy(a)
    else:
        b = KalmanHead(6, 3, seed=1)  # other Monte Carlo draws, until the load
        run(b, data[:3])  # its scratch made for its own tensors
        b.load_state_dict(copy.deepcopy(a.state_dict()), assign=how == "assign")  # not a's own tensors
        b.step_sizes.copy_(a.step_sizes)  # not in the state dict: rounded by the "to" round trip
    outs_a, outs_b = run(a, data[10:]), run(b, data[10:])
    assert all(torch.equal(x, z) for x, z in zip(outs_a, outs_b))
    for key, value in a.state_dict().items():
        if torch.is_tensor(value):
            assert torch.equal(value, b.state_dict()[key]), key
    assert a.updates == b.updates == 30


class Ops(TorchDispatchMode):
    """Records the aten ops that run."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", ["mc", "probit", "regression"])
def test_a_batch_1_step_is_few_ops_with_no_host_sync(kind):
    head = KalmanHead(256, 10, predictive="probit" if kind == "probit" else "mc")
    head.set_objective("regression" if kind == "regression" else "classification")
    data = list(stream(1, 3, 256, 10, kind == "regression"))
    run(head, data[:2])
    with Ops() as ops:
        run(head, data[2:])
    # .item(), bool() and the like read a value back to the host: a sync on a GPU
    assert not {"_local_scalar_dense", "item", "is_nonzero", "equal"} & {n.split(".")[0] for n in ops.names}
    assert len(ops.names) <= 70, ops.names  # 112 before the step was fused
