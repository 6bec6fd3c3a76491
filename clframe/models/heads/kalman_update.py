"""The Kalman head's scoring step (``clframe.models.heads.kalman``): the predictive log-likelihood of
a batch before the update and the closed-form gradients of gamma, s^2 and T, as functions of tensors.

At batch size 1 each small op costs more in dispatch (1-2 us on a CPU) than in arithmetic, so the
step is written with few operations (about 50, where a term-by-term version took about 100):
per-sample scalars are [B, 1] columns (they broadcast against [B, K] without an unsqueeze), dot
products of single rows are ``mm``, means over the Monte Carlo draws are products with a row of 1/S,
the temperature's gradient is taken for every class and then picked at the label, and ``G`` can be
written into the caller's preallocated tensor. The term-by-term version is the reference of
``tests/heads/test_kalman_update.py``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Settings(NamedTuple):
    """What a step computes (the head's settings)."""

    regression: bool
    gaussian: bool  # the loss is the Gaussian predictive log-likelihood (regression, or that objective)
    probit: bool
    learn_gamma: bool
    learn_temperature: bool
    prior_var: float


class Scores(NamedTuple):
    """A step's outputs (float32) and the update's inputs (the state's dtype)."""

    out: Tensor  # log class probabilities, or the predictive mean [B, K]
    loglik: Tensor  # each sample's predictive log-likelihood [B]
    loss: Tensor  # minus the mean (or weighted sum) of the objective's log-likelihoods []
    G: Tensor  # Phi A_pred  [B, m]
    resid: Tensor  # y - Phi m_pred  [B, K]
    g2: Tensor  # gamma^2
    q: Tensor  # (1 - gamma^2) s_w^2
    s: Tensor  # the predictive variances Phi A_pred Phi' + s^2  [B, 1]
    grads: Tensor  # the objectives' gradients in (logit gamma, log s^2, log T)  [1, 3]


def score(cfg: Settings, phi: Tensor, pa: Tensor, mu0: Tensor, gamma: Tensor, noise: Tensor, temp: Tensor,
          y: Tensor, w: Tensor | None, eye: Tensor, eps: Tensor, draw_mean: Tensor,
          phi_t: Tensor | None = None, G_out: Tensor | None = None) -> Scores:
    """Score a batch before the update, with the closed-form gradients of the head's parameters.

    Args:
        cfg: what to compute.
        phi: features [B, m]; pa: ``phi A`` [B, m] and mu0: ``phi m`` [B, K] of the posterior
            before the drift.
        gamma, noise, temp: gamma, s^2 and T (0-d).
        y: class labels [B] or regression targets [B, K]; w: sample weights [B, 1] or None.
        eye: the K x K identity (one-hot rows); eps: the Monte Carlo draws [S, K]; draw_mean:
            a [1, S] row of 1 / S.
        phi_t: ``phi.t()``, when already made.
        G_out: a [1, m] tensor to write ``G`` into (batch size 1), or None.
    """
    B = phi.shape[0]  # not len(): Tensor.__len__ is Python, ~0.3 us a call
    g2 = gamma * gamma
    q = torch.rsub(g2, cfg.prior_var, alpha=cfg.prior_var)
    # G = Phi A_pred, the drifted covariance's rows without another m^2 product
    G = torch.addcmul(pa * g2, phi, q, out=G_out)
    phi_t = phi.t() if phi_t is None else phi_t
    v = rowdot(G, phi, phi_t)  # phi A_pred phi', the latent variance  [B, 1]
    mu = mu0 * gamma  # [B, K]
    s = v + noise
    inv_s = s.reciprocal()
    # a row of the identity, not F.one_hot: one_hot checks the labels' range, a host sync
    target = y.reshape(B, -1).to(phi.dtype) if cfg.regression else eye.index_select(0, y)
    r = target - mu  # the innovation, also the update's residual
    n_out = target.shape[1]
    r2s = rowdot(r, r) * inv_s  # |r|^2 / s
    # closed-form d l / d(logit gamma, log s^2) of l = -0.5 (D log(2 pi s) + |r|^2 / s),
    # s = s_w^2 |phi|^2 + gamma^2 d + s^2 with d = phi A phi' - s_w^2 |phi|^2, r = y - gamma phi m
    dl_ds = (r2s - n_out).mul_(inv_s).mul_(0.5)
    if cfg.learn_gamma:
        d = rowdot(torch.sub(pa, phi, alpha=cfg.prior_var), phi, phi_t)
        dl_dgamma = torch.addcmul(rowdot(r, mu0) * inv_s, dl_ds * d, gamma, value=2.0)
        # d gamma / d logit(gamma) = gamma (1 - gamma)
        dgamma = reduce_batch(dl_dgamma, w) * (gamma - g2)
    else:
        dgamma = s.new_zeros(1, 1)
    gauss = torch.log(s * (2 * math.pi)).mul_(n_out).add_(r2s).mul_(-0.5) if cfg.gaussian else None
    if cfg.regression:
        out, ll, dlog_t = mu, gauss, None
    else:
        out, dlog_t = class_log_probs_and_grad(cfg, mu, v, temp, y, eps, draw_mean)
        ll = pick(out, y) if B > 1 or w is not None else None  # [B, 1], for the loss
    grads = torch.cat([dgamma, reduce_batch(dl_ds, w) * noise,  # d s^2 / d log s^2 = s^2
                       s.new_zeros(1, 1) if dlog_t is None else reduce_batch(dlog_t, w)], 1)
    out_f = out.float()
    ll_f = ll.float() if cfg.regression else pick(out_f, y)  # picking commutes with the cast
    if B == 1 and w is None and (cfg.regression or not cfg.gaussian):
        loss = ll_f.neg()  # the loss is minus the log-likelihood: no second cast
    else:
        loss = reduce_batch(gauss if cfg.gaussian else ll, w).float().neg()
    return Scores(out_f, ll_f.view(B), loss.view(()), G, r, g2, q, s, grads)


def class_log_probs_and_grad(cfg: Settings, mu: Tensor, v: Tensor, temp: Tensor, y: Tensor, eps: Tensor,
                             draw_mean: Tensor) -> tuple[Tensor, Tensor | None]:
    """Log class probabilities [B, K] and d(log p(y))/d(log T) [B, 1] (None if T is not learned),
    from the latent means ``mu`` [B, K] and variances ``v`` [B, 1], at the labels ``y`` [B]."""
    if cfg.probit:
        beta1 = torch.div(v, temp * temp).mul_(math.pi / 8).add_(1)  # 1 + pi v / 8 T^2
        z = mu / beta1.sqrt().mul_(temp)
        logp = F.log_softmax(z, -1)
        if not cfg.learn_temperature:
            return logp, None
        # dz/dlogT = -z / (1 + beta)
        pz = (logp.exp() * z).sum(-1, keepdim=True)
        return logp, (pz - pick(z, y)).div_(beta1)
    sd = v.clamp_min(0).sqrt_()
    # one sample: the draws are the rows of z [S, K], and means over them products with a row of 1/S
    # (cheaper at this size than reductions over the leading dimension)
    z = torch.addcmul(mu, sd, eps if y.shape[0] == 1 else eps.unsqueeze(1)).div_(temp)  # [S, (B,) K]
    p = torch.softmax(z, -1)
    p_bar = _draw_mean(p, draw_mean)  # [B, K]
    logp = p_bar.clamp_min(torch.finfo(p.dtype).tiny).log_()
    if not cfg.learn_temperature:
        return logp, None
    # d p_s(k) / d log T = -p_s(k) (z_k - sum_j p_j z_j): d log p_bar(k) / d log T of every class, then the label's
    pz = (p * z).sum(-1, keepdim=True)
    return logp, pick(_draw_mean(pz.sub(z).mul_(p), draw_mean).div_(p_bar), y)


def _draw_mean(x: Tensor, draw_mean: Tensor) -> Tensor:
    """The mean over the Monte Carlo draws of ``x`` [S, K] (as a product with the row ``draw_mean``)
    or [S, B, K]."""
    return torch.mm(draw_mean, x) if x.dim() == 2 else x.mean(0)


def reduce_batch(x: Tensor, w: Tensor | None) -> Tensor:
    """The batch mean of ``x`` [B, 1], or its ``w``-weighted sum (the task loss's convention) [1, 1]."""
    if w is None:
        return x if x.shape[0] == 1 else x.mean(0, keepdim=True)
    return (x * w).sum(0, keepdim=True)


def rowdot(a: Tensor, b: Tensor, b_t: Tensor | None = None) -> Tensor:
    """Row-wise dot products [B, 1] of ``a`` and ``b`` [B, n] (``b_t``: ``b.t()``, when already made)."""
    if a.shape[0] == 1:
        return torch.mm(a, b.t() if b_t is None else b_t)
    return (a * b).sum(-1, keepdim=True)


def pick(x: Tensor, y: Tensor) -> Tensor:
    """``x[..., b, y_b]`` [..., B, 1] of ``x`` [..., B, K] at the labels ``y`` [B]."""
    if y.shape[0] == 1:
        return x.index_select(-1, y)
    return x.gather(-1, y.view(-1, 1).expand(*x.shape[:-1], 1))
