"""The self-referential weight matrix: ``srwm(x, w0, d_out)`` with the Triton kernel on CUDA and the
plain-PyTorch recurrence elsewhere (``backend`` overrides)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from clframe.kernels.srwm.naive import srwm_naive


def srwm(x: Tensor, w0: Tensor, d_out: int, backend: Literal["auto", "naive", "triton"] = "auto"
         ) -> tuple[Tensor, Tensor]:
    """Outputs [B, T, H, d_out] and final fast weights [B, H, M, D] of the SRWM.

    Args:
        x: inputs per head [B, T, H, D].
        w0: initial fast weights [B, H, d_out + 2 D + 4, D].
        d_out: output size per head.
        backend: ``auto`` (the Triton kernel for CUDA tensors, else naive), ``naive`` or ``triton``
            (on the CPU only under ``TRITON_INTERPRET=1``) (default ``auto``).
    """
    if backend not in ("auto", "naive", "triton"):
        raise ValueError(f"unknown backend '{backend}' (auto, naive, triton)")
    if backend == "naive" or (backend == "auto" and not x.is_cuda):
        return srwm_naive(x, w0, d_out)
    from clframe.kernels.srwm.fused_recurrent import srwm_fused  # Triton is imported only here

    return srwm_fused(x, w0, d_out)
