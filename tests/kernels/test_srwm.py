"""The SRWM Triton kernel against the plain-PyTorch recurrence (the ground truth).

Without a GPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, set by conftest), so
the sizes are tiny and odd; the GPU tests use real sizes and are skipped without CUDA.
"""

from __future__ import annotations

import pytest
import torch

from clframe.kernels.srwm import srwm
from clframe.kernels.srwm.naive import N_RATES, srwm_naive

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def inputs(b, t, h, d, d_out, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, h, d, generator=g).to(device, dtype).requires_grad_()
    w0 = (0.5 * torch.randn(b, h, d_out + 2 * d + N_RATES, d, generator=g)).to(device, dtype).requires_grad_()
    return x, w0


def run(fn, x, w0, d_out, seed=1):
    """Outputs, final weights and the gradients of a random linear function of both."""
    y, w = fn(x, w0, d_out)
    g = torch.Generator().manual_seed(seed)
    gy, gw = torch.randn(y.shape, generator=g).to(y), torch.randn(w.shape, generator=g).to(w)
    dx, dw0 = torch.autograd.grad((y * gy).sum() + (w * gw).sum(), (x, w0))
    return y, w, dx, dw0


def rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12))


def test_naive_gradcheck_in_float64():
    x, w0 = inputs(2, 5, 2, 3, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: srwm_naive(a, b, 2), (x, w0))


def test_naive_reads_the_output_before_the_update_and_rates_are_per_block():
    x, w0 = inputs(1, 1, 1, 3, 2)
    y, w = srwm_naive(x, w0, 2)
    torch.testing.assert_close(y[0, 0, 0], (w0[0, 0] @ x[0, 0, 0])[:2])
    # with the rate logits of blocks 1..3 at -inf only the y rows change
    with torch.no_grad():
        w0[..., -3:, :] = 0
        x1 = x.detach().clone()
        w0b = w0.detach().clone()
        w0b[..., -3:, :] = 0
        w0b[..., -3:, 0] = -1e4 * torch.sign(x1[0, 0, 0, 0])
    _, w = srwm_naive(x1, w0b, 2)
    changed = (w - w0b).abs().sum(-1)[0, 0] > 0
    assert changed[:2].all() and not changed[2:].any()


@pytest.mark.parametrize("b,t,h,d,d_out", [(2, 7, 2, 5, 3), (1, 13, 2, 8, 8), (3, 1, 1, 5, 1)])
def test_kernel_matches_naive_outputs_state_and_gradients(b, t, h, d, d_out):
    x, w0 = inputs(b, t, h, d, d_out)
    ref = run(srwm_naive, x, w0, d_out)
    got = run(lambda *a: srwm(*a, backend="triton"), x, w0, d_out)
    for name, a, r in zip(("y", "final W", "dx", "dW0"), got, ref):
        assert rel(a, r) < 1e-5, name


def test_kernel_without_a_gradient_for_the_final_state():
    x, w0 = inputs(1, 7, 2, 5, 3)
    y_ref = srwm_naive(x, w0, 3)[0]
    y = srwm(x, w0, 3, backend="triton")[0]
    a = torch.autograd.grad(y_ref.sum(), (x, w0))
    g = torch.autograd.grad(y.sum(), (x, w0))
    assert rel(g[0], a[0]) < 1e-5 and rel(g[1], a[1]) < 1e-5


def test_reverting_the_updates_drifts_little_over_a_long_sequence():
    # the backward rebuilds every W_t from the final W; compare with float64 naive gradients
    x, w0 = inputs(1, 96, 1, 4, 4)
    ref = run(lambda a, b, d: srwm_naive(a.double(), b.double(), d), x, w0, 4)
    got = run(lambda *a: srwm(*a, backend="triton"), x, w0, 4)
    assert rel(got[2], ref[2]) < 1e-4 and rel(got[3], ref[3]) < 1e-4


def test_auto_uses_naive_on_cpu_and_bad_shapes_are_named():
    x, w0 = inputs(1, 3, 1, 4, 2)
    torch.testing.assert_close(srwm(x, w0, 2)[0], srwm_naive(x, w0, 2)[0])
    with pytest.raises(ValueError, match="w0 must be"):
        srwm(x, w0[..., :-1, :], 2)
    with pytest.raises(ValueError, match="backend"):
        srwm(x, w0, 2, backend="cuda")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_kernel_matches_naive_on_cuda(dtype, tol):
    x, w0 = inputs(2, 257, 4, 64, 64, device="cuda", dtype=dtype)
    xr, wr = x.detach().float().requires_grad_(), w0.detach().float().requires_grad_()
    ref = run(srwm_naive, xr, wr, 64)
    got = run(lambda *a: srwm(*a, backend="triton"), x, w0, 64)
    for name, a, r in zip(("y", "final W", "dx", "dW0"), got, ref):
        assert rel(a, r) < tol, name


def test_a_forced_triton_backend_refuses_cpu_tensors_outside_the_interpreter(monkeypatch):
    # the same rule as the delta rule's (clframe.kernels.check_device), checked before Triton is imported
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, w0 = torch.randn(1, 3, 1, 2), torch.randn(1, 1, 2 + 4 + 4, 2)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        srwm(x, w0, 2, backend="triton")
