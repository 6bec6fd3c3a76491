"""Delta rule on flash-linear-attention's Triton kernel (package ``fla-core``, module ``fla.ops.delta_rule``).

A thin wrapper: fla's ``fused_recurrent_delta_rule`` computes exactly the recurrence of ``naive.py`` once

- ``scale=1.0``: fla multiplies q by ``scale`` and defaults it to ``Dk ** -0.5``; clframe's caller scales q;
- ``use_qk_l2norm_in_kernel=False``: phi (L2 norm or otherwise) is applied by the caller;
- shapes: fla takes ``[B, T, H, D]`` (no ``head_first`` argument in fla-core 0.6.0), beta ``[B, T, H]``;
- state: fla's ``[B, H, Dk, Dv]`` is ``S = W^T``, the layout of ``naive.py``; passed through as is.

The kernel accumulates in float32 whatever the input dtype: o comes back in q's dtype, the final state in
float32. fla's ``chunk_delta_rule`` (faster for long training sequences) is not used: it refuses float32
inputs and autotunes, so it has no run on the CPU under ``TRITON_INTERPRET=1`` to test it against.

fla and Triton are imported inside the function, never at import time of clframe. On the CPU the kernel
runs only under Triton's interpreter (``TRITON_INTERPRET=1`` set before fla is first imported).
"""

from __future__ import annotations

import torch

from clframe.kernels import check_device
from clframe.kernels.delta_rule.naive import check_inputs

FLA_PIN = "fla-core==0.6.0"
FLA_INSTALL_HINT = (f"the delta rule's 'triton' backend needs flash-linear-attention's kernels: pip install "
                    f"'{FLA_PIN}' (and triton)")


def delta_rule_fused(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``delta_rule_naive``'s contract on fla's fused recurrent Triton kernel (CUDA, or CPU when interpreting).

    q, k ``[B, T, H, Dk]``, v ``[B, T, H, Dv]``, beta ``[B, T, H]`` in (0, 1), initial_state ``[B, H, Dk, Dv]``
    (``S = W^T``). Returns o ``[B, T, H, Dv]`` (q's dtype) and the final state ``[B, H, Dk, Dv]`` (float32) or
    None. Differentiable in q, k, v, beta and initial_state.
    """
    check_inputs(q, k, v, beta, initial_state)
    tensors = [q, k, v, beta] + ([] if initial_state is None else [initial_state])
    if len({x.device for x in tensors}) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted({str(x.device) for x in tensors})}")
    check_device(q)
    try:
        from fla.ops.delta_rule import fused_recurrent_delta_rule
    except ImportError as e:
        raise ImportError(FLA_INSTALL_HINT) from e

    return fused_recurrent_delta_rule(
        q,
        k,
        v,
        beta,
        scale=1.0,
        initial_state=initial_state,
        output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=False,
    )
