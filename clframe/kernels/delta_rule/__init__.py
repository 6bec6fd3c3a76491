"""Delta-rule fast weights: ``W_t = W_{t-1} + beta_t (v_t - W_{t-1} k_t) k_t^T``, ``o_t = W_t q_t``.

``naive.py`` holds the equations, the state layout (``S = W^T``, ``[B, H, Dk, Dv]``) and the ground truth;
``fused_recurrent.py`` wraps flash-linear-attention's Triton kernel. Neither fla nor Triton is imported here.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings

import torch

from clframe.kernels import choose_backend
from clframe.kernels.delta_rule.fused_recurrent import FLA_PIN, delta_rule_fused
from clframe.kernels.delta_rule.naive import delta_rule_naive

__all__ = ["FLA_PIN", "delta_rule", "delta_rule_fused", "delta_rule_naive", "fused_available"]


@functools.cache
def fused_available() -> bool:
    """Whether fla's delta-rule kernels import (imports fla, and so Triton, on the first call only)."""
    if importlib.util.find_spec("fla") is None or importlib.util.find_spec("triton") is None:
        return False
    try:
        import fla.ops.delta_rule  # noqa: F401
    except ImportError as e:
        warnings.warn(f"fla is installed but its delta-rule kernels do not import ({e}); using the naive loop",
                      stacklevel=3)
        return False
    return True


def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the delta rule: q, k ``[B, T, H, Dk]`` (phi applied, unscaled), v ``[B, T, H, Dv]``, beta ``[B, T, H]``
    in (0, 1), initial_state ``[B, H, Dk, Dv]``; returns o ``[B, T, H, Dv]`` and the final state (or None).

    ``backend``: ``auto``, ``naive`` or ``triton`` (fla's fused recurrent kernel), chosen by
    ``clframe.kernels.choose_backend`` (default ``auto``: the kernel for CUDA tensors that are not float64
    when fla imports, the naive loop otherwise).
    """
    if choose_backend(backend, q, fused_available) == "triton":
        return delta_rule_fused(q, k, v, beta, initial_state, output_final_state)
    return delta_rule_naive(q, k, v, beta, initial_state, output_final_state)
