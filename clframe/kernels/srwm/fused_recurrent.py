"""The SRWM recurrence as one Triton kernel per direction.

One program per (sequence, head) keeps the fast weights W [M, D] on chip for the whole sequence.
The forward stores, per step, softmax(q), softmax(k), the four rates' logits and v - vbar: O(T (M + D))
per head, never a W_t. The backward walks time in reverse and reverts the update,
``W_{t-1} = W_t - (r_t * (v_t - vbar_t)) softmax(k_t)^T``, from the final W. Reverting in floating
point is not exact: each step subtracts what was added, rounded, so W_{t-1} drifts from the forward's
by a few ulps of |W| per step, and the drift grows about linearly in T (see the tests' bound).
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from clframe.kernels.srwm.naive import N_RATES


@triton.jit
def _rates(BETA, bo, rows, blk, rmask):
    # per row, sigmoid of its block's rate logit
    return tl.sigmoid(tl.load(BETA + bo + blk, mask=rmask, other=0.0))


@triton.jit
def _srwm_fwd(X, W0, Y, WT, PQ, PK, BETA, DIFF, T, H, D, DOUT, M, BM: tl.constexpr, BD: tl.constexpr):
    pid = tl.program_id(0)
    b, h = pid // H, pid % H
    rows, cols = tl.arange(0, BM), tl.arange(0, BD)
    rmask, cmask = rows < M, cols < D
    blk = (rows >= DOUT).to(tl.int32) + (rows >= DOUT + D).to(tl.int32) + (rows >= DOUT + 2 * D).to(tl.int32)
    selq = rows[:, None] == DOUT + cols[None, :]  # row of q_j, as a [M, D] selector
    selk = rows[:, None] == DOUT + D + cols[None, :]
    wmask = rmask[:, None] & cmask[None, :]
    w_off = pid * M * D + rows[:, None] * D + cols[None, :]
    w = tl.load(W0 + w_off, mask=wmask, other=0.0).to(tl.float32)
    for t in range(T):
        xo = ((b * T + t) * H + h)
        xt = tl.load(X + xo * D + cols, mask=cmask, other=0.0).to(tl.float32)
        out = tl.sum(w * xt[None, :], axis=1)  # [M]: y, q, k, beta
        q = tl.where(cmask, tl.sum(tl.where(selq, out[:, None], 0.0), axis=0), float("-inf"))
        k = tl.where(cmask, tl.sum(tl.where(selk, out[:, None], 0.0), axis=0), float("-inf"))
        pq = tl.exp(q - tl.max(q, axis=0))
        pq = pq / tl.sum(pq, axis=0)
        pk = tl.exp(k - tl.max(k, axis=0))
        pk = pk / tl.sum(pk, axis=0)
        bmask = rmask & (blk == 3)
        tl.store(BETA + xo * 4 + (rows - (DOUT + 2 * D)), out, mask=bmask)
        r = _rates(BETA, xo * 4, rows, blk, rmask)
        diff = tl.sum(w * (pq - pk)[None, :], axis=1)  # v - vbar
        w = w + (r * diff)[:, None] * pk[None, :]
        tl.store(Y + xo * DOUT + rows, out.to(Y.dtype.element_ty), mask=rows < DOUT)
        tl.store(PQ + xo * D + cols, pq, mask=cmask)
        tl.store(PK + xo * D + cols, pk, mask=cmask)
        tl.store(DIFF + xo * M + rows, diff, mask=rmask)
    tl.store(WT + w_off, w.to(WT.dtype.element_ty), mask=wmask)


@triton.jit
def _srwm_bwd(X, WT, DY, DWT, PQ, PK, BETA, DIFF, DX, DW0, T, H, D, DOUT, M, HAS_DWT: tl.constexpr,
              BM: tl.constexpr, BD: tl.constexpr):
    pid = tl.program_id(0)
    b, h = pid // H, pid % H
    rows, cols = tl.arange(0, BM), tl.arange(0, BD)
    rmask, cmask = rows < M, cols < D
    blk = (rows >= DOUT).to(tl.int32) + (rows >= DOUT + D).to(tl.int32) + (rows >= DOUT + 2 * D).to(tl.int32)
    selq = rows[:, None] == DOUT + cols[None, :]
    selk = rows[:, None] == DOUT + D + cols[None, :]
    wmask = rmask[:, None] & cmask[None, :]
    w_off = pid * M * D + rows[:, None] * D + cols[None, :]
    w = tl.load(WT + w_off, mask=wmask, other=0.0).to(tl.float32)
    if HAS_DWT:
        g = tl.load(DWT + w_off, mask=wmask, other=0.0).to(tl.float32)
    else:
        g = tl.zeros([BM, BD], dtype=tl.float32)
    beta0 = DOUT + 2 * D
    for i in range(T):
        t = T - 1 - i
        xo = ((b * T + t) * H + h)
        xt = tl.load(X + xo * D + cols, mask=cmask, other=0.0).to(tl.float32)
        pq = tl.load(PQ + xo * D + cols, mask=cmask, other=0.0)
        pk = tl.load(PK + xo * D + cols, mask=cmask, other=0.0)
        diff = tl.load(DIFF + xo * M + rows, mask=rmask, other=0.0)
        r = _rates(BETA, xo * 4, rows, blk, rmask)
        u = r * diff
        w = w - u[:, None] * pk[None, :]  # revert the update: W_{t-1}
        du = tl.sum(g * pk[None, :], axis=1)
        ddiff = du * r  # gradient of v (and minus that of vbar)
        dpq = tl.sum(w * ddiff[:, None], axis=0)
        dpk = tl.sum(g * u[:, None], axis=0) - dpq
        dq = pq * (dpq - tl.sum(dpq * pq, axis=0))
        dk = pk * (dpk - tl.sum(dpk * pk, axis=0))
        dlogit = du * diff * r * (1.0 - r)  # per row; summed per block below
        db0 = tl.sum(tl.where(blk == 0, dlogit, 0.0), axis=0)
        db1 = tl.sum(tl.where(blk == 1, dlogit, 0.0), axis=0)
        db2 = tl.sum(tl.where(blk == 2, dlogit, 0.0), axis=0)
        db3 = tl.sum(tl.where(blk == 3, dlogit, 0.0), axis=0)
        dy = tl.load(DY + xo * DOUT + rows, mask=rows < DOUT, other=0.0).to(tl.float32)
        dout = dy + tl.sum(tl.where(selq, dq[None, :], 0.0), axis=1) + tl.sum(tl.where(selk, dk[None, :], 0.0), axis=1)
        dout += tl.where(rows == beta0, db0, 0.0) + tl.where(rows == beta0 + 1, db1, 0.0)
        dout += tl.where(rows == beta0 + 2, db2, 0.0) + tl.where(rows == beta0 + 3, db3, 0.0)
        dx = tl.sum(w * dout[:, None], axis=0)
        tl.store(DX + xo * D + cols, dx.to(DX.dtype.element_ty), mask=cmask)
        g = g + ddiff[:, None] * (pq - pk)[None, :] + dout[:, None] * xt[None, :]
    tl.store(DW0 + w_off, g.to(DW0.dtype.element_ty), mask=wmask)


def _launch_shape(m: int, d: int) -> tuple[int, int, int]:
    bm, bd = triton.next_power_of_2(m), triton.next_power_of_2(d)
    return bm, bd, 4 if bm * bd <= 4096 else 8


class SRWMFunction(torch.autograd.Function):
    """``srwm_naive`` with the Triton kernels: ``apply(x [B, T, H, D], w0 [B, H, M, D], d_out)``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w0: Tensor, d_out: int) -> tuple[Tensor, Tensor]:
        b, t, h, d = x.shape
        m = w0.shape[2]
        x, w0 = x.contiguous(), w0.contiguous()
        y = x.new_empty(b, t, h, d_out)
        wt = torch.empty_like(w0)
        f32 = dict(device=x.device, dtype=torch.float32)
        pq, pk = torch.empty(b, t, h, d, **f32), torch.empty(b, t, h, d, **f32)
        beta, diff = torch.empty(b, t, h, N_RATES, **f32), torch.empty(b, t, h, m, **f32)
        bm, bd, warps = _launch_shape(m, d)
        _srwm_fwd[(b * h,)](x, w0, y, wt, pq, pk, beta, diff, t, h, d, d_out, m, BM=bm, BD=bd, num_warps=warps)
        ctx.save_for_backward(x, wt, pq, pk, beta, diff)
        ctx.d_out, ctx.w_dtype = d_out, w0.dtype
        return y, wt

    @staticmethod
    def backward(ctx: Any, dy: Tensor | None, dwt: Tensor | None) -> tuple[Tensor, Tensor, None]:
        x, wt, pq, pk, beta, diff = ctx.saved_tensors
        b, t, h, d = x.shape
        m = wt.shape[2]
        dy = torch.zeros(b, t, h, ctx.d_out, device=x.device, dtype=x.dtype) if dy is None else dy.contiguous()
        dx = torch.empty_like(x)
        dw0 = torch.empty(wt.shape, device=x.device, dtype=ctx.w_dtype)
        bm, bd, warps = _launch_shape(m, d)
        has_dwt = dwt is not None
        _srwm_bwd[(b * h,)](x, wt, dy, dwt.contiguous() if has_dwt else wt, pq, pk, beta, diff, dx, dw0, t, h, d,
                            ctx.d_out, m, HAS_DWT=has_dwt, BM=bm, BD=bd, num_warps=warps)
        return dx, dw0, None


def srwm_fused(x: Tensor, w0: Tensor, d_out: int) -> tuple[Tensor, Tensor]:
    """Outputs [B, T, H, d_out] and final weights [B, H, M, D] of the SRWM, with the Triton kernels."""
    if w0.shape[-2:] != (d_out + 2 * x.shape[-1] + N_RATES, x.shape[-1]):
        raise ValueError(f"w0 must be [B, H, {d_out + 2 * x.shape[-1] + N_RATES}, {x.shape[-1]}], got "
                         f"{list(w0.shape)}")
    return SRWMFunction.apply(x, w0, d_out)
