"""Spectral regularization (Lewandowski et al., 2024): keep every layer's largest singular value near 1."""

from __future__ import annotations

from fnmatch import fnmatch
from typing import Annotated, Any

import torch
from annotated_types import Ge
from clframe.strategies._penalty import FlatParams
from clframe.strategies._spectral_norm import as_matrix, power_iteration, power_iterations, spectral_penalty
from torch import Tensor, nn

from clframe.config.registry import STRATEGIES, ParamError
from clframe.core.strategy import StepContext, Strategy

# power-iteration steps when a layer's u, v are first drawn (as torch's spectral_norm does)
WARMUP_ITERATIONS = 15


@STRATEGIES.register("spectral")
class Spectral(Strategy):
    """Penalty ``spectral_lambda * R`` (logged as ``loss/spectral``) with
    ``R = sum_l (sigma_max(W_l)^k - 1)^2 + bias_weight * sum_l ||b_l||^2``.

    ``sigma_max`` is estimated like torch's ``spectral_norm``: persistent unit vectors ``u, v`` per
    weight matrix get ``iterations`` power-iteration steps per training step (no gradient), then
    ``sigma = u^T W v`` enters with gradient ``u v^T`` (the exact one once the iteration has
    converged). Conv kernels are read as [out, in*k*k]. The form of ``R`` follows the project
    notes and is not verified against the paper, hence ``k`` and ``bias_weight`` are settings. The
    default strength 1e-4 is a weak pull: at ``sigma = 2`` with ``k = 2`` a layer adds 9e-4 to the
    loss, so a single task is barely changed while growth of ``sigma_max`` over many tasks is
    resisted. Raise it when ``sigma_max`` still drifts, minding that the quartic (for ``k = 2``)
    penalty gets stiff: on split digits at lr 0.5, 1e-2 holds ``sigma_max`` near 2 where naive
    reaches 3.4, and 1e-1 diverges.

    Args:
        spectral_lambda: strength of the penalty (default 1e-4).
        k: exponent of ``sigma_max`` (default 2.0).
        bias_weight: weight of the squared norms of the regularized layers' biases (the
            ``<layer>.bias`` beside each ``<layer>.weight``); 0 drops the bias term (default 1.0).
        iterations: power-iteration steps per training step, at least 1; more of them track
            ``sigma_max`` better when the top singular values are close (default 1).
        layers: shell-style patterns over parameter names selecting the weight matrices, e.g.
            ``["backbone.*"]``; only trainable parameters with ``ndim >= 2`` qualify (default: all).
    """

    def __init__(
        self,
        spectral_lambda: Annotated[float, Ge(0)] = 1e-4,
        k: float = 2.0,
        bias_weight: Annotated[float, Ge(0)] = 1.0,
        iterations: Annotated[int, Ge(1)] = 1,
        layers: list[str] | None = None,
    ) -> None:
        if iterations < 1:
            raise ParamError("iterations", f"must be >= 1, got {iterations}",
                             "Set the power-iteration steps per training step (default 1).")
        self.spectral_lambda, self.k, self.bias_weight = spectral_lambda, k, bias_weight
        self.iterations, self.layers = iterations, layers
        self._weights: dict[str, nn.Parameter] = {}
        self._biases: FlatParams | None = None
        # the power iteration's vectors as columns [m, 1], [n, 1] in the order of _weights (after setup),
        # and those loaded before setup (by name)
        self._us: list[Tensor] = []
        self._vs: list[Tensor] = []
        self._loaded: tuple[dict[str, Tensor], dict[str, Tensor]] = ({}, {})

    @property
    def u(self) -> dict[str, Tensor]:
        """Each regularized weight's left unit vector [m] (the saved state, read-only)."""
        return {n: x.view(-1) for n, x in zip(self._weights, self._us)} if self._weights else self._loaded[0]

    @property
    def v(self) -> dict[str, Tensor]:
        """Each regularized weight's right unit vector [n] (the saved state, read-only)."""
        return {n: x.view(-1) for n, x in zip(self._weights, self._vs)} if self._weights else self._loaded[1]

    def setup(self, module: Any) -> None:
        params = dict(module.named_parameters())
        u, v = self.u, self.v
        self._weights = {n: p for n, p in params.items() if p.requires_grad and p.ndim >= 2
                         and (self.layers is None or any(fnmatch(n, pat) for pat in self.layers))}
        if self.layers is not None and not self._weights:
            raise ValueError(f"spectral: layers={self.layers} match no weight matrix; the candidates are "
                             f"{[n for n, p in params.items() if p.ndim >= 2]}")
        bias_names = [n[: -len("weight")] + "bias" for n in self._weights if n.endswith("weight")]
        biases = [params[b] for b in bias_names if b in params and params[b].requires_grad]
        self._biases = FlatParams(biases) if biases and self.bias_weight else None
        self._init_vectors(u, v)

    def _init_vectors(self, u: dict[str, Tensor], v: dict[str, Tensor]) -> None:
        """Keep the (u, v) of each weight whose shapes still fit; draw and warm up the others."""
        g = torch.Generator().manual_seed(0)
        us, vs = [], []
        for n, p in self._weights.items():
            w = as_matrix(p.detach())
            if n in u and u[n].shape == w.shape[:1] and v[n].shape == w.shape[1:]:
                un, vn = u[n].to(p.device, p.dtype), v[n].to(p.device, p.dtype)
            else:
                un, vn = power_iteration(w, torch.randn(w.shape[0], generator=g).to(p.device, p.dtype),
                                         WARMUP_ITERATIONS)
            us.append(un.view(-1, 1))
            vs.append(vn.view(-1, 1))
        self._us, self._vs = us, vs

    @torch.no_grad()
    def sigma_max(self, iterations: int = 0) -> dict[str, Tensor]:
        """Each regularized weight's largest singular value as estimated by ``u^T W v``: detached 0-d
        tensors on the weights' device, read without a host sync. The estimate is a lower bound
        (exact once converged); ``iterations`` > 0 refines it from the stored ``u`` first without
        changing the stored vectors (default 0: the vectors of the last training step)."""
        out = {}
        for (n, p), u, v in zip(self._weights.items(), self.u.values(), self.v.values()):
            w = as_matrix(p)
            u, v = power_iteration(w, u, iterations) if iterations else (u, v)
            out[n] = u @ w @ v
        return out

    def penalty(self) -> Tensor:
        """Advance every layer's power iteration by ``iterations`` steps, then ``spectral_lambda * R``."""
        weights = list(self._weights.values())
        # in float32 under mixed precision too: the power iteration's vectors are state carried across steps
        with torch.autocast(weights[0].device.type, enabled=False):
            # new vectors rather than in-place updates: the sigma of this step keeps u, v for its backward
            self._us, self._vs, sigma = power_iterations([as_matrix(w) for w in weights], self._us, self.iterations)
            return spectral_penalty(weights, self._us, self._vs, sigma, self._biases, self.k, self.bias_weight,
                                    self.spectral_lambda)

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        return {"spectral": self.penalty()} if self._weights else {}

    def state_dict(self) -> dict[str, Any]:
        return {"u": dict(self.u), "v": dict(self.v)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loaded = dict(state["u"]), dict(state["v"])
        if self._weights:
            self._init_vectors(*self._loaded)
