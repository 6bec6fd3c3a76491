"""The self-referential weight matrix: ``srwm(x, w0, d_out)``.

``naive.py`` holds the recurrence and the ground truth; ``fused_recurrent.py`` is our Triton kernel
(forward and a backward that reverts the updates). Triton is not imported here.
"""

from __future__ import annotations

import functools
import importlib.util

from torch import Tensor

from clframe.kernels import check_device, choose_backend
from clframe.kernels.srwm.naive import srwm_naive

__all__ = ["srwm", "srwm_fused", "srwm_naive", "fused_available"]
INSTALL_HINT = "the SRWM's 'triton' backend needs Triton: pip install triton (it comes with CUDA builds of torch)"


@functools.cache
def fused_available() -> bool:
    """Whether Triton imports (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def srwm_fused(x: Tensor, w0: Tensor, d_out: int) -> tuple[Tensor, Tensor]:
    """``srwm_naive``'s contract on the Triton kernel (imported only here, on the first call)."""
    check_device(x)
    try:
        from clframe.kernels.srwm.fused_recurrent import srwm_fused as kernel
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return kernel(x, w0, d_out)


def srwm(x: Tensor, w0: Tensor, d_out: int, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Outputs [B, T, H, d_out] and final fast weights [B, H, M, D] of the SRWM.

    Args:
        x: inputs per head [B, T, H, D].
        w0: initial fast weights [B, H, d_out + 2 D + 4, D].
        d_out: output size per head.
        backend: ``auto``, ``naive`` or ``triton``, chosen by ``clframe.kernels.choose_backend`` (default
            ``auto``: the Triton kernel for CUDA tensors that are not float64, the naive loop otherwise).
    """
    if choose_backend(backend, x, fused_available) == "triton":
        return srwm_fused(x, w0, d_out)
    return srwm_naive(x, w0, d_out)
