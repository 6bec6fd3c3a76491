"""Sequence kernels: one folder per op, the same layout and rules in each.

Each op lives in its own folder (``clframe/kernels/<op>/``) with

- ``naive.py``: plain PyTorch, a readable time loop; the ground truth every fast kernel is tested against
  (forward, final state and gradients). It runs on any device and in float64 (gradcheck);
- ``fused_recurrent.py``: the fused recurrent Triton kernel, our own (``srwm``) or a thin wrapper around a
  well-kept library's (``delta_rule``: flash-linear-attention), adapting shapes, scaling and state layout
  only, never a rewrite;
- ``__init__.py``: the op itself, ``<op>(..., backend="auto")``, and ``<op>_naive``, ``<op>_fused``.

One backend vocabulary, ``BACKENDS``: ``naive``, ``triton`` (the fused kernel) or ``auto``, and one
rule, ``choose_backend``: ``auto`` takes the fused kernel for CUDA tensors that are not float64 (the
kernels compute in float32) when it imports, the naive loop otherwise; a forced ``triton`` runs the
fused kernel, which refuses CPU tensors outside the interpreter (``check_device``) and, when it does not
import, raises an ImportError saying what to install. Triton and the kernel libraries are imported
lazily, inside the functions that call them: importing ``clframe`` or ``clframe.kernels.*`` imports
neither, and does not initialise CUDA.

Shapes follow clframe's convention ``[B, T, H, D]`` (batch, time, heads, features).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

BACKENDS = ("auto", "naive", "triton")


def interpreting() -> bool:
    """Whether Triton runs its kernels in the interpreter (``TRITON_INTERPRET=1``: on the CPU)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on")


def choose_backend(backend: str, x: torch.Tensor, available: Callable[[], bool]) -> str:
    """``naive`` or ``triton`` for inputs like ``x``.

    Args:
        backend: one of ``BACKENDS``.
        x: an input of the op (its device and dtype decide ``auto``).
        available: whether the fused kernel imports (called for ``auto`` on CUDA only).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if x.is_cuda and x.dtype != torch.float64 and available() else "naive"
    return backend


def check_device(x: torch.Tensor) -> None:
    """A Triton kernel runs on CUDA tensors, or on the CPU under the interpreter; else a ValueError."""
    if not x.is_cuda and not interpreting():
        raise ValueError(f"the 'triton' backend runs its kernel on CUDA tensors (got {x.device}); use "
                         "backend='naive', or set TRITON_INTERPRET=1 before the kernel is first imported to "
                         "run it on the CPU")
