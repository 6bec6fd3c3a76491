"""Linear-Gaussian drift: a synthetic regression stream drawn from exactly the state-space model a
Kalman-filter head assumes (AR(1) weight drift, Gaussian observation noise), with abrupt resets."""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge, Gt
from clframe.scenarios._common import tensor_data
from torch import Tensor

from clframe.config.registry import SCENARIOS, ParamError
from clframe.data.stream import Experience, Scenario, Stream

CHUNK = 128
"""Steps solved at once by ``drift_weights``: one [CHUNK, CHUNK] matmul per chunk, a Python loop over chunks only."""


def drift_weights(n_steps: int, n_outputs: int, n_features: int, gamma: float, prior_std: float,
                  g: torch.Generator) -> Tensor:
    """A weight trajectory [n_steps, n_outputs, n_features] (float32) of the stationary AR(1) drift
    ``W_0 ~ N(0, prior_std^2 I)``, ``W_n = gamma W_{n-1} + sqrt(1 - gamma^2) prior_std eps_n``, so
    every ``W_n`` has marginal variance ``prior_std^2`` and lag-1 autocorrelation ``gamma``.

    Vectorised by chunks: inside a chunk ``W_{c+j} = gamma^(j+1) W_{c-1} + sum_{k<=j} gamma^(j-k) e_{c+k}``
    is one matmul with a lower-triangular Toeplitz matrix (only non-negative powers of gamma, so it is
    stable for any length, unlike a closed form with ``gamma^-n``); only the chunks' last weights are
    carried in a Python loop.
    """
    dim = n_outputs * n_features
    n_chunks = -(-n_steps // CHUNK)
    eps = torch.randn(n_chunks * CHUNK, dim, generator=g, dtype=torch.float64)
    # innovation e_n; W_{-1} = 0 with e_0 of the prior's std makes W_0 a draw from the prior
    scale = torch.full((n_chunks * CHUNK, 1), (1 - gamma**2) ** 0.5 * prior_std, dtype=torch.float64)
    scale[0] = prior_std
    e = (eps * scale).view(n_chunks, CHUNK, dim)
    lag = torch.arange(CHUNK).view(-1, 1) - torch.arange(CHUNK).view(1, -1)  # j - k
    toeplitz = torch.where(lag >= 0, torch.tensor(gamma, dtype=torch.float64) ** lag.clamp_min(0), 0.0)
    inner = toeplitz @ e  # [n_chunks, CHUNK, dim]: each chunk's trajectory from a zero start
    decay = torch.tensor(gamma, dtype=torch.float64) ** torch.arange(1, CHUNK + 1).view(-1, 1)  # gamma^(j+1)
    prev = torch.zeros(dim, dtype=torch.float64)
    out = torch.empty_like(inner)
    for c in range(n_chunks):
        out[c] = decay * prev + inner[c]
        prev = out[c, -1]
    return out.view(-1, n_outputs, n_features)[:n_steps].float()


def _features(n: int, n_features: int, g: torch.Generator) -> Tensor:
    # scaled by 1/sqrt(n_features): the signal W phi then has variance about prior_std^2
    return torch.randn(n, n_features, generator=g) / n_features**0.5


@SCENARIOS.register("linear_gaussian_drift")
def linear_gaussian_drift(
    n_features: Annotated[int, Ge(1)] = 16,
    n_outputs: Annotated[int, Ge(1)] = 1,
    gamma: float = 0.99,
    prior_std: Annotated[float, Gt(0)] = 1.0,
    noise_std: Annotated[float, Ge(0)] = 0.3,
    n_segments: Annotated[int, Ge(1)] = 4,
    samples_per_segment: Annotated[int, Ge(1)] = 5000,
    eval_samples: Annotated[int, Ge(1)] = 500,
    seed: int = 0,
) -> Scenario:
    """Regression stream of the linear-Gaussian state-space model: features ``phi_n ~ N(0, I / n_features)``,
    targets ``y_n = W_n phi_n + noise_std * N(0, I)`` [N, n_outputs] float32, weights drifting as
    ``W_n = gamma W_{n-1} + sqrt(1 - gamma^2) prior_std eps_n`` (see ``drift_weights``) and drawn
    fresh from the prior ``N(0, prior_std^2 I)`` at each segment's start (an abrupt reset).

    Each segment is one experience, task label 0; boundary-free and ordered: the samples are in time
    order and must not be shuffled. A segment's eval data are ``eval_samples`` fresh features with
    targets of the weights at its last step (plus noise). ``info``: ``gamma``, ``reset_step`` (index
    of the segment's first sample in the whole stream) and ``final_weights`` [n_outputs, n_features].

    Args:
        n_features: input size (default 16).
        n_outputs: output size, the scenario's ``n_classes`` (default 1).
        gamma: the true drift, the weights' lag-1 autocorrelation, in (0, 1]; 1 means static
            weights within a segment (default 0.99).
        prior_std: std ``s_w`` of the weights' stationary prior (default 1.0).
        noise_std: std of the observation noise (default 0.3).
        n_segments: segments, each starting from fresh weights (default 4).
        samples_per_segment: training samples per segment (default 5000).
        eval_samples: eval samples per segment (default 500).
        seed: seed of the weights, features and noise (default 0).
    """
    if not 0 < gamma <= 1:
        raise ParamError("gamma", f"must be in (0, 1], got {gamma}",
                         "It is the weights' per-sample autocorrelation; 1 keeps them fixed within a segment.")
    if prior_std <= 0:
        raise ParamError("prior_std", f"must be > 0, got {prior_std}", "It is the std of the weights' prior.")
    if noise_std < 0:
        raise ParamError("noise_std", f"must be >= 0, got {noise_std}", "It is a standard deviation.")
    g = torch.Generator().manual_seed(seed)
    exps = []
    for i in range(n_segments):
        w = drift_weights(samples_per_segment, n_outputs, n_features, gamma, prior_std, g)
        x = _features(samples_per_segment, n_features, g)
        y = torch.einsum("nof,nf->no", w, x) + noise_std * torch.randn(samples_per_segment, n_outputs, generator=g)
        x_eval = _features(eval_samples, n_features, g)
        y_eval = x_eval @ w[-1].T + noise_std * torch.randn(eval_samples, n_outputs, generator=g)
        # every output is a target of every segment: a masking head must leave them all unmasked
        exps.append(Experience(i, tensor_data(x, y, 0), tensor_data(x_eval, y_eval, 0), list(range(n_outputs)),
                               info={"gamma": gamma, "reset_step": i * samples_per_segment,
                                     "final_weights": w[-1].clone()}))
    return Scenario(Stream(exps, boundary_free=True, ordered=True), n_classes=n_outputs, input_shape=(n_features,),
                    name=f"linear-gaussian-drift (gamma={gamma}, {n_segments} segments x {samples_per_segment})",
                    objective="regression")
