"""Kalman-filter head: a Bayesian linear-Gaussian state-space model over the last-layer weights
(Titsias et al. 2024, "Kalman Filter for Online Classification of Non-Stationary Data").

Model. Each output ``k`` has a weight vector ``w_k`` over the features ``phi`` (plus a constant 1
with ``bias``), drifting as ``w_n = gamma w_{n-1} + sqrt(1 - gamma^2) s_w eps`` (constant marginal
variance ``s_w^2``) and observed through ``y_k = phi^T w_k + N(0, s^2)``. The noise is the same for
every output, so the posterior keeps one mean per output and one shared m x m covariance ``A``:
O(K m + m^2) memory and per-sample cost. Classification regresses the one-hot targets (the
Gaussian approximation of the softmax likelihood; no public code exists, so this is our design
decision) and reads class probabilities from the Gaussian logits ``f ~ N(phi^T m_k, phi^T A phi)``
through a softmax at a learned temperature ``T``: Monte Carlo (``mc_samples`` fixed standard-normal
draws, common random numbers, so predictions are deterministic and a resumed run matches exactly),
or the closed-form probit approximation ``softmax(mu / T / sqrt(1 + pi v / (8 T^2)))``.

Each training step: **predict** ``m = gamma m``, ``A = gamma^2 A + (1 - gamma^2) s_w^2 I``; the one-
step predictive log-likelihood ``log N(y | phi^T m, phi^T A phi + s^2)`` of the batch *before* the
update is the objective of ``gamma`` (a sigmoid of a free parameter, so it stays in [0, 1]) and
``s^2``, learned by the head's own online SGD (``lr_gamma``, ``lr_noise``; gradients in closed form,
each clipped to ``max_grad``). ``T`` is fitted by the same SGD on the categorical predictive log-
likelihood of the label (its only objective: ``gamma`` and ``s^2`` would otherwise just rescale the
logits). A backbone that is not frozen learns through the module's optimizer on a predictive log-
likelihood too: by default the categorical one (``backbone_objective``). Then **update**: a batch of
B samples is one time step of the drift model, conditioned on jointly by the exact block update (B =
1 is the paper's per-sample filter); the covariance goes through the Joseph form ``A' = (I - K Phi)
A (I - K Phi)^T + s^2 K K^T``, expanded to O(B m^2) products and symmetrised, so it stays symmetric
positive definite over long streams (tested over 100k steps). The state is kept in ``state_dtype``
(float64 by default) and lives in the module's buffers, so checkpoints carry it and a resumed run
continues exactly. At batch size 1 a step is about 60 small tensor operations, so it is written with
few of them (``kalman_update``) and reuses preallocated tensors and views (``_Scratch``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from torch import Tensor, nn

from clframe.config.registry import HEADS, ParamError
from clframe.models.heads.kalman_update import Settings, reduce_batch, score

DTYPES = {"float64": torch.float64, "float32": torch.float32}
T = TypeVar("T")


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


@HEADS.register("kalman")
class KalmanHead(nn.Module):
    """Kalman-filter head over any backbone's features (see the module docstring for the model).

    Args:
        in_features: backbone output width m (supplied).
        n_classes: number of classes, or the target size for regression (supplied).
        n_tasks: number of task labels (supplied, unused: one head for all tasks).
        gamma: initial drift gamma in (0, 1) (default 0.999).
        prior_var: stationary prior variance of each weight, s_w^2 (default 1.0).
        noise_var: initial observation noise s^2 (default 0.1).
        temperature: initial softmax temperature of the class probabilities (default 0.1).
        learn_gamma: learn gamma by online SGD (default True).
        learn_noise: learn s^2 (default True).
        learn_temperature: learn the temperature (classification) (default True).
        lr_gamma: step size of the head's online SGD on logit(gamma) (default 1.0).
        lr_noise: step size on log s^2 (default 0.1).
        lr_temperature: step size on log T (default 0.01).
        max_grad: clip each of the three gradients to [-max_grad, max_grad], so one step moves a
            parameter by at most its lr times this: a burst of surprises after an abrupt shift lowers
            gamma fast but not to ~0 in a few steps, where it can stay (the one-step gradient cannot
            see the worth of a memory the filter no longer has) (default 1.0).
        predictive: ``mc`` (Monte Carlo over the Gaussian logits) or ``probit`` (closed form)
            (default ``mc``).
        mc_samples: Monte Carlo draws (default 32).
        backbone_objective: what a fine-tuned backbone learns on, in classification: ``categorical``,
            the predictive log-likelihood of the label (Monte Carlo or probit, through the features), or
            ``gaussian``, that of the one-hot targets that also trains gamma and s^2. The Gaussian one
            collapsed the features in our streams (its ``K log s`` term rewards shrinking them)
            (default ``categorical``).
        bias: append a constant feature 1 (default True).
        state_dtype: ``float64`` or ``float32`` for the mean and covariance (default ``float64``).
        symmetrize_every: replace the covariance by its symmetric part every this many updates
            (default 16).
        seed: seed of the Monte Carlo draws (default 0).
    """

    def __init__(
        self, in_features: int, n_classes: int, n_tasks: int = 1, gamma: Annotated[float, Interval(gt=0, lt=1)] = 0.999,
        prior_var: Annotated[float, Gt(0)] = 1.0, noise_var: Annotated[float, Gt(0)] = 0.1,
        temperature: Annotated[float, Gt(0)] = 0.1, learn_gamma: bool = True, learn_noise: bool = True,
        learn_temperature: bool = True, lr_gamma: Annotated[float, Gt(0)] = 1.0,
        lr_noise: Annotated[float, Gt(0)] = 0.1, lr_temperature: Annotated[float, Gt(0)] = 0.01,
        max_grad: Annotated[float, Gt(0)] = 1.0, predictive: Literal["mc", "probit"] = "mc",
        mc_samples: Annotated[int, Ge(1)] = 32,
        backbone_objective: Literal["categorical", "gaussian"] = "categorical", bias: bool = True,
        state_dtype: Literal["float64", "float32"] = "float64", symmetrize_every: Annotated[int, Ge(1)] = 16,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0 < gamma < 1:
            raise ParamError("gamma", f"must be in (0, 1) (the sigmoid of a free parameter), got {gamma}")
        if predictive not in ("mc", "probit"):
            raise ParamError("predictive", f"must be 'mc' or 'probit', got '{predictive}'")
        if backbone_objective not in ("categorical", "gaussian"):
            raise ParamError("backbone_objective", f"must be 'categorical' or 'gaussian', got '{backbone_objective}'")
        if state_dtype not in DTYPES:
            raise ParamError("state_dtype", f"must be one of {', '.join(DTYPES)}, got '{state_dtype}'")
        self.n_outputs, self.bias, self.prior_var = n_classes, bias, prior_var
        self.backbone_objective = backbone_objective
        self.lrs, self.max_grad, self.predictive = (lr_gamma, lr_noise, lr_temperature), max_grad, predictive
        m, dt = in_features + int(bias), DTYPES[state_dtype]
        # logit(gamma), log s^2, log T in one vector (one SGD op a step), in the state's dtype (no
        # casts on the hot path); stepped by the head itself, never by the module's optimizer
        self.hyper = nn.Parameter(torch.tensor([_logit(gamma), math.log(noise_var), math.log(temperature)], dtype=dt),
                                  requires_grad=False)
        self.learn_gamma, self.learn_noise, self.learn_temperature = learn_gamma, learn_noise, learn_temperature
        learn = (learn_gamma, learn_noise, learn_temperature)
        self.register_buffer("step_sizes", torch.tensor([lr * on for lr, on in zip(self.lrs, learn)], dtype=dt),
                             persistent=False)
        self.register_buffer("mean", torch.zeros(m, n_classes, dtype=dt))
        self.register_buffer("cov", prior_var * torch.eye(m, dtype=dt))
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("eps", torch.randn(mc_samples, n_classes, generator=g, dtype=dt))
        self.regression = False
        self.symmetrize_every, self.updates = symmetrize_every, 0  # updates: a host-side count, no sync
        self._pending: tuple[Tensor, ...] | None = None
        self._ws: _Scratch | None = None

    @property
    def gamma_logit(self) -> Tensor:
        """logit(gamma), a view into ``hyper``."""
        return self.hyper[0]

    @property
    def log_noise(self) -> Tensor:
        """log s^2, a view into ``hyper``."""
        return self.hyper[1]

    @property
    def log_temperature(self) -> Tensor:
        """log T, a view into ``hyper``."""
        return self.hyper[2]

    def diagnostics(self) -> dict[str, Tensor]:
        """The learned gamma, noise variance and (classification) temperature, 0-d tensors on the device."""
        out = {"gamma": torch.sigmoid(self.gamma_logit), "noise_var": self.log_noise.exp()}
        return out if self.regression else {**out, "temperature": self.log_temperature.exp()}

    # -- prediction -------------------------------------------------------------------------------
    def _features(self, h: Tensor) -> Tensor:
        phi = h.flatten(1).to(self.cov.dtype)
        return F.pad(phi, (0, 1), value=1.0) if self.bias else phi

    def _moments(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        """After the drift step: the latent means [B, K] and variances [B] (differentiable in ``phi``;
        the training step's no-grad version is ``kalman_update.score``)."""
        gamma = torch.sigmoid(self.hyper[0])
        mu0 = phi @ self.mean
        pa = phi @ self.cov
        c = self.prior_var * (phi * phi).sum(-1)
        d = (pa * phi).sum(-1) - c
        v = torch.addcmul(c, gamma * gamma, d)  # gamma^2 phi A phi + (1 - gamma^2) s_w^2 |phi|^2
        return gamma * mu0, v

    def class_log_probs(self, mu: Tensor, v: Tensor) -> Tensor:
        """Log class probabilities [B, K] of Gaussian logits with means ``mu`` [B, K] and variance ``v`` [B]
        (differentiable: a fine-tuned backbone learns through it)."""
        temp = self.log_temperature.exp()
        if self.predictive == "probit":
            beta = math.pi * v / (8 * temp**2)
            return F.log_softmax(mu / (temp * torch.sqrt(1 + beta)).unsqueeze(-1), -1)
        z = torch.addcmul(mu, v.clamp_min(0).sqrt().unsqueeze(-1), self.eps.unsqueeze(1)) / temp  # [S, B, K]
        return torch.softmax(z, -1).mean(0).clamp_min(torch.finfo(z.dtype).tiny).log()

    def forward(self, h: Tensor, t: Tensor) -> Tensor:
        """One-step-ahead prediction from the current posterior (the state is not changed):
        log class probabilities [B, K], or the predictive mean [B, D] for regression."""
        mu, v = self._moments(self._features(h))
        return (mu if self.regression else self.class_log_probs(mu, v)).float()

    def set_objective(self, name: str) -> None:
        """``classification`` (the default) or ``regression``; the module tells the head."""
        self.regression = name == "regression"

    # -- training --------------------------------------------------------------------------------
    def online_step(self, h: Tensor, y: Tensor, t: Tensor,
                    weight: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Predict, and score the batch before the update.

        Returns the outputs (as ``forward``), the loss (minus the mean predictive log-likelihood of
        ``backbone_objective``, or its ``weight``-weighted sum; it has a gradient only when the
        features do, i.e. for a backbone that is fine-tuned) and each sample's predictive
        log-likelihood [B] (of the class label for classification, of the targets for regression).
        The gradients of the head's own parameters are computed in closed form here (no autograd)
        and applied by ``observe`` with the update.
        """
        w = None if weight is None else weight.to(self.cov.dtype).view(-1, 1)
        loss = None
        if h.requires_grad:  # a fine-tuned backbone: its objective, through phi only
            loss = -reduce_batch(self._differentiable_loglik(self._features(h), y), w).reshape(())
            h = h.detach()
        out, ll, nll = _without_grad(self._score, h, y, w)
        return out, (nll if loss is None else loss.float()), ll

    def _differentiable_loglik(self, phi: Tensor, y: Tensor) -> Tensor:
        """The backbone's objective per sample [B, 1], with autograd through ``phi``."""
        mu, v = self._moments(phi)
        if self.regression or self.backbone_objective == "gaussian":
            with torch.no_grad():
                target = y.reshape(len(y), -1).to(phi.dtype) if self.regression else \
                    phi.new_zeros(len(y), self.n_outputs).scatter_(1, y.unsqueeze(1), 1.0)
            return _gauss_loglik(target, mu, v + self.hyper[1].exp()).unsqueeze(1)
        return self.class_log_probs(mu, v).gather(1, y.unsqueeze(1))

    def _score(self, h: Tensor, y: Tensor, w: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """The no-grad part of ``online_step`` (float32 outputs, log-likelihoods [B] and loss []);
        leaves the update's inputs and the head's gradients in ``_pending``."""
        ws = self._scratch()
        one = h.shape[0] == 1
        if one:
            phi = ws.phi  # its bias column stays 1
            ws.phi_h.copy_(h if h.dim() == 2 else h.flatten(1))
        else:
            phi = self._features(h)
        torch.sigmoid(ws.hyper, out=ws.sig)  # gamma = sig[0]
        torch.exp(ws.hyper, out=ws.ex)  # s^2 = ex[1], T = ex[2]
        cfg = Settings(self.regression, self.regression or self.backbone_objective == "gaussian",
                       self.predictive == "probit", self.learn_gamma, self.learn_temperature, self.prior_var)
        sc = score(cfg, phi, torch.mm(phi, ws.cov), torch.mm(phi, ws.mean), ws.gamma, ws.noise, ws.temp, y, w,
                   ws.eye, ws.eps, ws.draw_mean, phi_t=ws.phi_t if one else None, G_out=ws.G if one else None)
        # plain attribute writes here and below: nn.Module.__setattr__ costs ~1 us
        self.__dict__["_pending"] = (phi, sc.G, sc.resid, ws.gamma, sc.g2, sc.q, ws.noise, sc.s, sc.grads)
        return sc.out, sc.loglik, sc.loss

    def observe(self) -> None:
        """Apply the drift and the Kalman update for the batch of the last ``online_step``, and one
        online SGD (ascent) step of the head's own parameters on its predictive log-likelihood."""
        if self._pending is None:
            raise RuntimeError("KalmanHead.observe() needs an online_step() first.")
        _without_grad(self._observe)

    def _observe(self) -> None:
        *pending, grads = self._pending
        self.__dict__["_pending"] = None
        self._update(*pending)
        ws = self._scratch()
        # a zero step for a parameter that is not learned
        ws.hyper_row.addcmul_(ws.step_row, grads.clamp_(-self.max_grad, self.max_grad))

    @torch.no_grad()
    def filter_step(self, phi: Tensor, pa: Tensor, mu0: Tensor, y: Tensor, gamma: Tensor, noise: Tensor) -> None:
        """Drift, then condition on the observations ``y`` [B, K] at features ``phi`` [B, m], given
        ``pa = phi A`` [B, m] and ``mu0 = phi m`` [B, K] of the posterior before the drift."""
        g2 = gamma * gamma
        q = (1 - g2) * self.prior_var
        G = g2 * pa + q * phi  # Phi A_pred, without another m^2 product
        s = (G * phi).sum(-1, keepdim=True) + noise if phi.shape[0] == 1 else None
        self._update(phi, G, y - gamma * mu0, gamma, g2, q, noise, s)

    def _update(self, phi: Tensor, G: Tensor, resid: Tensor, gamma: Tensor, g2: Tensor, q: Tensor,
                noise: Tensor, s: Tensor | None) -> None:
        """The drift and the conditioning, given ``G = Phi A_pred`` [B, m], the residual ``y - Phi
        m_pred`` [B, K], the noise s^2 and (batch size 1) the innovation variance ``s = phi A_pred
        phi' + s^2`` [1, 1]."""
        ws = self._scratch()
        mean, A = ws.mean, ws.cov
        mean.mul_(gamma)
        A.mul_(g2)
        ws.diag.add_(q)
        if phi.shape[0] == 1:
            # rank 1: the Joseph form A - K g' - g K' + s K K' is one rank-2 product, -[g - s K, K]' [K, g],
            # its factors rows of one preallocated [3, m] tensor (no cat)
            if G is not ws.G:
                ws.G.copy_(G)
            K = torch.div(ws.G, s, out=ws.K)
            mean.addmm_(ws.K_t, resid)
            torch.addcmul(ws.G, s, K, value=-1.0, out=ws.G_sK)
            A.addmm_(ws.L_t, ws.U, alpha=-1.0)
        else:
            S = G @ phi.T
            S.diagonal().add_(noise)
            Kt = torch.cholesky_solve(G, torch.linalg.cholesky(S))  # K' = S^-1 Phi A  [B, m]
            mean.addmm_(Kt.T, resid)
            KG = Kt.T @ G
            # Joseph form expanded: A - K Phi A - A Phi' K' + K S K'; first-order insensitive to
            # rounding in K, unlike the short form A - K Phi A
            A -= KG + KG.T
            A.addmm_(Kt.T, S @ Kt)
        self.__dict__["updates"] += 1
        if self.updates % self.symmetrize_every == 0:
            # rounding leaves A asymmetric by ~eps per update; a transposed add costs ~5 rank-2
            # updates at m = 256, so it runs every few steps, not every step (into a kept buffer:
            # allocating 0.5 MB costs as much as the add)
            torch.mul(torch.add(A, A.mT, out=ws.sym), 0.5, out=A)

    def _scratch(self) -> _Scratch:
        """The scratch tensors and views, remade when ``to()``, a load with ``assign`` or a new ``.data``
        replaced the state."""
        ws, hyper = self._ws, self._parameters["hyper"]
        if ws is None or ws.cov is not self._buffers["cov"] or ws.mean is not self._buffers["mean"] \
                or ws.eps is not self._buffers["eps"] or ws.step_sizes is not self._buffers["step_sizes"] \
                or ws.hyper is not hyper or ws.hyper_row.data_ptr() != hyper.data_ptr():
            ws = self._ws = _Scratch(self)
        return ws

    def __getstate__(self) -> dict:
        # the scratch's views would become separate tensors in a copy (deepcopy, pickle): it makes its own
        return {**super().__getstate__(), "_ws": None}

    def get_extra_state(self) -> dict[str, int]:
        return {"updates": self.updates}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.updates = state["updates"]


def _without_grad(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` with autograd off (``torch.no_grad()`` costs ~2.5 us of Python, 2% of a step)."""
    prev = torch.is_grad_enabled()
    torch._C._set_grad_enabled(False)
    try:
        return fn(*args)
    finally:
        torch._C._set_grad_enabled(prev)


def _gauss_loglik(y: Tensor, mu: Tensor, s: Tensor) -> Tensor:
    """``sum_k log N(y_k | mu_k, s)`` per sample [B] for targets and means [B, D], variances [B]."""
    return -0.5 * (y.shape[1] * torch.log(2 * math.pi * s) + (y - mu).pow(2).sum(-1) / s)


class _Scratch:
    """The head's state tensors and the views a step uses, made once (a view costs about as much as a
    small op), and preallocated batch-1 tensors: the features (the bias column stays 1) and the rows
    ``[g - s K, K, g]`` of the rank-2 update's factors, so ``[g - s K, K]`` and ``[K, g]`` are views."""

    def __init__(self, head: KalmanHead) -> None:
        self.mean, self.cov, self.eps, self.step_sizes = head.mean, head.cov, head.eps, head.step_sizes
        self.hyper = head.hyper
        self.hyper_row, self.step_row = self.hyper.view(1, 3), self.step_sizes.view(1, 3)  # [1, 3], as the gradients
        m, like = len(self.cov), {"dtype": self.cov.dtype, "device": self.cov.device}
        self.diag = self.cov.diagonal()
        self.draw_mean = torch.full((1, len(self.eps)), 1 / len(self.eps), **like)
        self.phi = torch.ones(1, m, **like)
        self.phi_h, self.phi_t = self.phi[:, :m - int(head.bias)], self.phi.T
        rows = torch.zeros(3, m, **like)
        self.G_sK, self.K, self.G = rows[0:1], rows[1:2], rows[2:3]
        self.K_t, self.L_t, self.U = self.K.T, rows[0:2].T, rows[1:3]
        self.sig, self.ex = torch.empty(3, **like), torch.empty(3, **like)
        self.gamma, self.noise, self.temp = self.sig[0], self.ex[1], self.ex[2]
        self.eye = torch.eye(head.n_outputs, **like)
        self.sym = torch.empty_like(self.cov)
