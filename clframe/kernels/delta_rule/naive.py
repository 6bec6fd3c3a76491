"""Delta-rule fast weights (fast weight programmer / DeltaNet), as a plain time loop: the ground truth.

Per batch element and head, with W_0 = 0 unless an initial state is given::

    W_t = W_{t-1} + beta_t (v_t - W_{t-1} k_t) k_t^T        W_t: [Dv, Dk]
    o_t = W_t q_t                                              (read AFTER the update)

The feature map phi and the sigmoid of beta are the caller's: ``q`` and ``k`` arrive as phi(q), phi(k)
(e.g. ELU+1 sum-normalised, or L2-normalised as in DeltaNet) and ``beta`` in (0, 1). Nothing here scales
``q`` (no 1/sqrt(Dk)): a caller that wants a scale multiplies q itself.

State layout (the one flash-linear-attention uses, so that its wrapper passes states through unchanged):
the state is ``S = W^T`` of shape ``[B, H, Dk, Dv]``, and

    S_t = S_{t-1} + k_t (beta_t (v_t - S_{t-1}^T k_t))^T,     o_t = S_t^T q_t.
"""

from __future__ import annotations

import torch


def check_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, initial_state: torch.Tensor | None
) -> None:
    """Raise ValueError unless q, k [B,T,H,Dk], v [B,T,H,Dv], beta [B,T,H], initial_state [B,H,Dk,Dv]."""
    if q.ndim != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must both be [B, T, H, Dk], got {tuple(q.shape)} and {tuple(k.shape)}")
    B, T, H, Dk = q.shape
    if v.ndim != 4 or v.shape[:3] != (B, T, H):
        raise ValueError(f"v must be [B, T, H, Dv] = [{B}, {T}, {H}, Dv], got {tuple(v.shape)}")
    if beta.shape != (B, T, H):
        raise ValueError(f"beta must be [B, T, H] = [{B}, {T}, {H}], got {tuple(beta.shape)}")
    if initial_state is not None and initial_state.shape != (B, H, Dk, v.shape[-1]):
        raise ValueError(
            f"initial_state must be [B, H, Dk, Dv] = [{B}, {H}, {Dk}, {v.shape[-1]}], got {tuple(initial_state.shape)}"
        )


def delta_rule_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The delta rule as a time loop (see the module docstring for the equations and the state layout).

    Args:
        q: queries phi(q), ``[B, T, H, Dk]``, not scaled here.
        k: keys phi(k), ``[B, T, H, Dk]``.
        v: values, ``[B, T, H, Dv]``.
        beta: write strengths in (0, 1), ``[B, T, H]``.
        initial_state: ``S_0 = W_0^T``, ``[B, H, Dk, Dv]``; zeros when None.
        output_final_state: return ``S_T`` as well.

    Returns:
        ``(o, final_state)``: o ``[B, T, H, Dv]`` in q's dtype; final_state ``[B, H, Dk, Dv]`` (None unless
        ``output_final_state``) in the compute dtype: float32, or float64 for float64 inputs.

    Autograd flows to every input (no in-place op on a tensor that backward needs).
    """
    check_inputs(q, k, v, beta, initial_state)
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    out_dtype = q.dtype
    dtype = torch.promote_types(q.dtype, torch.float32)  # half inputs are computed in float32, like the kernels
    q, k, v, beta = (x.to(dtype) for x in (q, k, v, beta))

    if initial_state is None:
        S = q.new_zeros(B, H, Dk, Dv)  # [B, H, Dk, Dv]
    else:
        S = initial_state.to(dtype)  # [B, H, Dk, Dv]

    outs = []
    for t in range(T):
        q_t, k_t, v_t = q[:, t], k[:, t], v[:, t]  # [B, H, Dk], [B, H, Dk], [B, H, Dv]
        b_t = beta[:, t, :, None]  # [B, H, 1]
        recalled = torch.einsum("bhkv,bhk->bhv", S, k_t)  # W_{t-1} k_t = S_{t-1}^T k_t: [B, H, Dv]
        delta = b_t * (v_t - recalled)  # beta_t (v_t - W_{t-1} k_t): [B, H, Dv]
        S = S + k_t[..., :, None] * delta[..., None, :]  # S_t = S_{t-1} + k_t delta^T: [B, H, Dk, Dv]
        outs.append(torch.einsum("bhkv,bhk->bhv", S, q_t))  # o_t = S_t^T q_t = W_t q_t: [B, H, Dv]

    o = torch.stack(outs, dim=1) if outs else v.new_zeros(B, 0, H, Dv)  # [B, T, H, Dv]
    return o.to(out_dtype), (S if output_final_state else None)
