"""The self-referential weight matrix (SRWM) recurrence in plain PyTorch: the ground truth.

Per head, with ``x_t`` [D] and the fast weights ``W`` [M, D], M = d_out + 2 D + 4 (Irie et al.,
2022, "A Modern Self-Referential Weight Matrix That Learns to Modify Itself")::

    [y_t; q_t; k_t; b_t] = W_{t-1} x_t          # y_t is read with the weights before the update
    v_t = W_{t-1} softmax(q_t),  vbar_t = W_{t-1} softmax(k_t)
    W_t = W_{t-1} + (r_t * (v_t - vbar_t)) softmax(k_t)^T

where ``r_t`` [M] is ``sigmoid(b_t)`` with one of the four rates per block of rows (the y, q, k
and b rows), so the matrix learns how fast each of its own parts changes.
"""

from __future__ import annotations

import torch
from torch import Tensor

N_RATES = 4


def row_blocks(d_out: int, d: int, device: torch.device | None = None) -> Tensor:
    """The block (0: y, 1: q, 2: k, 3: b) of each of the M = d_out + 2 d + 4 rows [M]."""
    sizes = torch.tensor([d_out, d, d, N_RATES], device=device)
    return torch.repeat_interleave(torch.arange(N_RATES, device=device), sizes)


def srwm_naive(x: Tensor, w0: Tensor, d_out: int) -> tuple[Tensor, Tensor]:
    """Run the SRWM over a sequence.

    Args:
        x: inputs per head [B, T, H, D].
        w0: initial fast weights [B, H, M, D], M = d_out + 2 D + 4.
        d_out: output size per head.

    Returns:
        ``(y, w)``: outputs [B, T, H, d_out] and the final weights [B, H, M, D].
    """
    b, t_len, h, d = x.shape
    if w0.shape[-2:] != (d_out + 2 * d + N_RATES, d):
        raise ValueError(f"w0 must be [B, H, {d_out + 2 * d + N_RATES}, {d}] for d_out={d_out}, D={d}; "
                         f"got {list(w0.shape)}")
    blocks = row_blocks(d_out, d, x.device)
    w, ys = w0, []
    for t in range(t_len):
        out = torch.einsum("bhmd,bhd->bhm", w, x[:, t])  # [B, H, M]
        y, q, k, beta = out.split([d_out, d, d, N_RATES], dim=-1)
        pq, pk = q.softmax(-1), k.softmax(-1)
        v = torch.einsum("bhmd,bhd->bhm", w, pq)
        vbar = torch.einsum("bhmd,bhd->bhm", w, pk)
        rate = beta.sigmoid()[..., blocks]  # [B, H, M]
        w = w + (rate * (v - vbar)).unsqueeze(-1) * pk.unsqueeze(-2)
        ys.append(y)
    return torch.stack(ys, dim=1), w
