"""The Kalman-filter head: the filter is the textbook one, the closed-form gradients are autograd's,
the covariance stays SPD over 100k steps, gamma tracks the true drift, and the head trains inside
the framework with a frozen or a fine-tuned backbone."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from clframe.scenarios.linear_gaussian_drift import linear_gaussian_drift

from clframe.checkpoint.files import list_checkpoints, load_checkpoint
from clframe.config import compose
from clframe.errors import ConfigError
from clframe.models.heads.kalman import KalmanHead
from clframe.run.runner import build, run


def textbook_step(m, A, phi, y, gamma, noise, prior_var):
    """Predict, then the standard (dense, O(m^3)) Kalman update of every output column."""
    m, A = gamma * m, gamma**2 * A + (1 - gamma**2) * prior_var * torch.eye(len(A), dtype=A.dtype)
    S = phi @ A @ phi.T + noise * torch.eye(len(phi), dtype=A.dtype)
    K = A @ phi.T @ torch.linalg.inv(S)
    return m + K @ (y - phi @ m), A - K @ phi @ A


def observe_batch(head, phi, y, gamma):
    head.filter_step(phi, phi @ head.cov, phi @ head.mean, y, torch.tensor(gamma, dtype=torch.float64),
                     torch.tensor(0.3, dtype=torch.float64))


@pytest.mark.parametrize("batch", [1, 3])
def test_filter_matches_the_textbook_kalman_filter(batch):
    g = torch.Generator().manual_seed(0)
    head = KalmanHead(5, 4, bias=False, prior_var=2.0)
    m, A = head.mean.clone(), head.cov.clone()
    for _ in range(20):
        phi = torch.randn(batch, 5, generator=g, dtype=torch.float64)
        y = torch.randn(batch, 4, generator=g, dtype=torch.float64)
        observe_batch(head, phi, y, 0.9)
        m, A = textbook_step(m, A, phi, y, 0.9, 0.3, 2.0)
    torch.testing.assert_close(head.mean, m)
    torch.testing.assert_close(head.cov, A)


def test_block_update_equals_sequential_rank1_updates_without_drift():
    g = torch.Generator().manual_seed(1)
    phi = torch.randn(4, 6, generator=g, dtype=torch.float64)
    y = torch.randn(4, 3, generator=g, dtype=torch.float64)
    block, seq = KalmanHead(6, 3, bias=False), KalmanHead(6, 3, bias=False)
    observe_batch(block, phi, y, 1.0)
    for i in range(4):
        observe_batch(seq, phi[i: i + 1], y[i: i + 1], 1.0)
    torch.testing.assert_close(block.mean, seq.mean)
    torch.testing.assert_close(block.cov, seq.cov)


def reference_objectives(head, h, y, weight=None):
    """The head's objectives written plainly with autograd over its three free parameters."""
    params = [head.gamma_logit.detach().clone().requires_grad_(), head.log_noise.detach().clone().requires_grad_(),
              head.log_temperature.detach().clone().requires_grad_()]
    gamma, noise, temp = torch.sigmoid(params[0]), params[1].exp(), params[2].exp()
    phi = torch.cat([h.double(), torch.ones(len(h), 1, dtype=torch.float64)], 1)
    A = gamma**2 * head.cov + (1 - gamma**2) * head.prior_var * torch.eye(len(head.cov), dtype=torch.float64)
    mu, v = gamma * phi @ head.mean, (phi @ A * phi).sum(-1)
    target = y.double().view(len(y), -1) if head.regression else F.one_hot(y, head.n_outputs).double()
    s = v + noise
    gauss = -0.5 * (target.shape[1] * torch.log(2 * math.pi * s) + (target - mu).pow(2).sum(-1) / s)
    reduce = (lambda x: x.mean()) if weight is None else (lambda x: (x * weight.double()).sum())
    total = reduce(gauss)
    if not head.regression:
        mu, v = mu.detach(), v.detach()
        if head.predictive == "probit":
            logp = F.log_softmax(mu / (temp * torch.sqrt(1 + math.pi * v / (8 * temp**2))).unsqueeze(-1), -1)
        else:
            f = (mu + v.sqrt()[None, :, None] * head.eps[:, None, :]) / temp
            logp = torch.logsumexp(F.log_softmax(f, -1), 0) - math.log(len(head.eps))
        total = total + reduce(logp.gather(1, y.unsqueeze(1)).squeeze(1))
    return torch.autograd.grad(total, params, allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("kind", ["mc", "probit", "regression", "weighted"])
def test_closed_form_gradients_match_autograd(kind):
    g = torch.Generator().manual_seed(2)
    head = KalmanHead(5, 3, predictive="probit" if kind == "probit" else "mc", max_grad=1e9, gamma=0.9,
                      temperature=0.5)
    head.set_objective("regression" if kind == "regression" else "classification")
    for _ in range(30):  # a non-trivial posterior
        phi = torch.randn(1, 6, generator=g, dtype=torch.float64)
        observe_batch(head, phi, torch.randn(1, 3, generator=g, dtype=torch.float64), 0.95)
    h = torch.randn(4, 5, generator=g)
    y = torch.randn(4, 3, generator=g) if kind == "regression" else torch.randint(3, (4,), generator=g)
    weight = torch.rand(4, generator=g) if kind == "weighted" else None
    expected = reference_objectives(head, h, y, weight)
    before = [p.detach().clone() for p in (head.gamma_logit, head.log_noise, head.log_temperature)]
    head.online_step(h, y, torch.zeros(4, dtype=torch.long), weight)
    head.observe()
    after = (head.gamma_logit, head.log_noise, head.log_temperature)
    for b, a, lr, e in zip(before, after, head.lrs, expected):
        torch.testing.assert_close((a - b) / lr, e, rtol=1e-6, atol=1e-9)


def test_covariance_stays_symmetric_positive_definite_over_100k_steps():
    # float32 state, tiny noise, features of very different scales, slow drift: the hard case
    g = torch.Generator().manual_seed(3)
    head = KalmanHead(6, 3, bias=False, state_dtype="float32")
    scales = torch.logspace(-2, 2, 6)
    gamma, noise = torch.tensor(0.9999), torch.tensor(1e-4)
    chunk = 10_000
    for _ in range(10):
        phis = torch.randn(chunk, 1, 6, generator=g) * scales
        ys = torch.randn(chunk, 1, 3, generator=g)
        for phi, y in zip(phis, ys):
            head.filter_step(phi, phi @ head.cov, phi @ head.mean, y, gamma, noise)
        assert torch.equal(head.cov, head.cov.T)
        assert torch.linalg.eigvalsh(head.cov.double()).min() > 0
        assert torch.isfinite(head.mean).all()


def test_gamma_tracks_the_true_drift_and_drops_after_a_reset():
    sc = linear_gaussian_drift(n_features=8, n_outputs=4, gamma=0.95, n_segments=2, samples_per_segment=3000, seed=0)
    head = KalmanHead(8, 4, gamma=0.99, bias=False)
    head.set_objective("regression")
    t = torch.zeros(1, dtype=torch.long)
    gammas = []
    for e in sc.stream:
        for x, y in zip(e.train.x, e.train.y):
            head.online_step(x[None], y[None], t)
            head.observe()
            gammas.append(float(torch.sigmoid(head.gamma_logit)))
    settled = sum(gammas[2000:3000]) / 1000
    assert abs(settled - 0.95) < 0.02
    assert min(gammas[3000:3300]) < settled - 0.01  # the reset makes the past look stale


def test_prediction_does_not_change_the_state_and_gives_probabilities():
    head = KalmanHead(4, 5)
    state = {k: v.clone() for k, v in head.state_dict().items() if torch.is_tensor(v)}
    logp = head(torch.randn(7, 4), torch.zeros(7, dtype=torch.long))
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(7))
    for k, v in state.items():
        assert torch.equal(head.state_dict()[k], v), k


def test_mc_and_probit_predictives_agree_roughly():
    g = torch.Generator().manual_seed(4)
    mc, probit = KalmanHead(4, 5, mc_samples=4000), KalmanHead(4, 5, predictive="probit")
    for head in (mc, probit):
        data = torch.Generator().manual_seed(5)  # the same stream for both
        for _ in range(50):
            phi = torch.randn(1, 5, generator=data, dtype=torch.float64)
            observe_batch(head, phi, F.one_hot(torch.tensor([1]), 5).double(), 0.99)
    h = torch.randn(10, 4, generator=g)
    t = torch.zeros(10, dtype=torch.long)
    assert (mc(h, t).exp() - probit(h, t).exp()).abs().max() < 0.05


@pytest.mark.parametrize("bad, key", [("gamma=1.0", "head.gamma"), ("noise_var=0.0", "head.noise_var"),
                                      ("predictive=laplace", "head.predictive")])
def test_bad_settings_name_the_key(bad, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        build(compose(TINY + [f"head.{bad}"]))


TINY = ["scenario=drifting_digits", "scenario.n_samples=300", "scenario.min_gap=50", "scenario.n_permutations=1",
        "scenario.n_prior_shifts=1", "backbone.hidden=[16]", "head=kalman", "train.batch_size=4",
        "monitors.continual.enabled=false", "monitors.online.enabled=true", "monitors.online.window=10",
        "logger.progress=false",
        "checkpoint.enabled=false"]


@pytest.mark.parametrize("engine", ["trainer", "fabric"])
def test_frozen_backbone_trains_the_head_alone(tmp_path, engine):
    over = TINY + ["train.freeze_backbone=true", f"trainer.engine={engine}", "checkpoint.enabled=true"]
    initial = build(compose(over)).module.state_dict()  # the same seed builds the same weights
    summary = run(compose(over), tmp_path)
    final = load_checkpoint(list_checkpoints(tmp_path)[-1][1])["module"]["model"]
    assert summary["samples"] == 300 and 0 <= summary["online"]["online_acc"] <= 1
    assert summary["online"]["gamma"] != pytest.approx(0.999, abs=1e-6)  # gamma learned
    assert all(torch.equal(v, final[k]) for k, v in initial.items() if k.startswith("backbone."))
    assert not torch.equal(initial["head.cov"], final["head.cov"])


def test_fine_tuned_backbone_learns_on_the_head_objective():
    built = build(compose(TINY + ["train.lr=0.05"]))
    module = built.module
    module.configure_optimizers()
    before = [p.detach().clone() for p in module.backbone.parameters()]
    for i, batch in zip(range(5), built.loader):
        module.training_step(batch, i)
    assert all(not torch.equal(b, p) for b, p in zip(before, module.backbone.parameters()))
    assert module.head.mean.abs().sum() > 0


@pytest.mark.parametrize("objective", ["categorical", "gaussian"])
def test_a_fine_tuned_backbone_gets_the_chosen_predictive_log_likelihood(objective):
    head = KalmanHead(4, 3, backbone_objective=objective, gamma=0.9)
    h = torch.randn(5, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1])
    out, loss, loglik = head.online_step(h, y, torch.zeros(5, dtype=torch.long))
    assert loss.requires_grad
    if objective == "categorical":  # the label's log-probability, the same one the head reports
        torch.testing.assert_close(loss, -loglik.mean())
    else:
        torch.testing.assert_close(loss, -reference_gauss(head, h.detach(), y).mean().float())


def reference_gauss(head, h, y):
    phi = torch.cat([h.double(), torch.ones(len(h), 1, dtype=torch.float64)], 1)
    gamma, noise = torch.sigmoid(head.gamma_logit), head.log_noise.exp()
    A = gamma**2 * head.cov + (1 - gamma**2) * head.prior_var * torch.eye(len(head.cov), dtype=torch.float64)
    s = (phi @ A * phi).sum(-1) + noise
    target = F.one_hot(y, head.n_outputs).double()
    return -0.5 * (3 * torch.log(2 * math.pi * s) + (target - gamma * phi @ head.mean).pow(2).sum(-1) / s)


def test_a_hypernetwork_cannot_generate_the_kalman_head():
    with pytest.raises(ConfigError, match="hypernet"):
        build(compose(TINY + ["hypernet=hnet_mlp"]))
