"""Delta-rule fast weights: ``W_t = W_{t-1} + beta_t (v_t - W_{t-1} k_t) k_t^T``, ``o_t = W_t q_t``.

``naive.py`` holds the equations, the state layout (``S = W^T``, ``[B, H, Dk, Dv]``) and the ground truth;
``fla.py`` wraps flash-linear-attention's Triton kernel. Neither fla nor Triton is imported here.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings

import torch

from .fla import FLA_INSTALL_HINT, FLA_PIN, delta_rule_fla
from .naive import delta_rule_naive

__all__ = ["FLA_PIN", "delta_rule", "delta_rule_fla", "delta_rule_naive", "fla_available"]

BACKENDS = ("auto", "naive", "fla")


@functools.cache
def fla_available() -> bool:
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

    ``backend="auto"`` uses fla's kernel for CUDA tensors when fla imports, and the naive loop otherwise (CPU
    tensors, float64 inputs, which the kernel would compute in float32, or fla missing). ``"naive"`` and
    ``"fla"`` force one; a forced ``"fla"`` that cannot import raises an ImportError naming the pip pin.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        use_fla = q.is_cuda and q.dtype != torch.float64 and fla_available()
        backend = "fla" if use_fla else "naive"
    if backend == "fla":
        if importlib.util.find_spec("fla") is None:
            raise ImportError(FLA_INSTALL_HINT)
        return delta_rule_fla(q, k, v, beta, initial_state, output_final_state)
    return delta_rule_naive(q, k, v, beta, initial_state, output_final_state)
