"""Delta rule: the naive loop against a hand-worked example, gradcheck and state carrying; fla's Triton kernel
(through clframe's wrapper) against the naive loop, on the CPU under TRITON_INTERPRET=1 and on CUDA."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clframe.kernels.delta_rule import FLA_PIN, delta_rule, delta_rule_fused, delta_rule_naive, fused_available

HAS_FLA = importlib.util.find_spec("fla") is not None and importlib.util.find_spec("triton") is not None
REPO = Path(__file__).resolve().parents[2]


def inputs(B, T, H, Dk, Dv, *, dtype=torch.float32, device="cpu", seed=0, state=True):
    """Random q, k (L2-normalised, as DeltaNet's phi), v, beta in (0, 1) and an initial state."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, Dk, generator=g, dtype=torch.float64)
    k = F.normalize(torch.randn(B, T, H, Dk, generator=g, dtype=torch.float64), dim=-1)
    v = torch.randn(B, T, H, Dv, generator=g, dtype=torch.float64)
    beta = torch.rand(B, T, H, generator=g, dtype=torch.float64) * 0.9 + 0.05
    h0 = torch.randn(B, H, Dk, Dv, generator=g, dtype=torch.float64) if state else None
    return [None if x is None else x.to(dtype=dtype, device=device) for x in (q, k, v, beta, h0)]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in float64."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def compare_with_naive(fn, B, T, H, Dk, Dv, *, device, state, seed=0):
    """Relative errors of fn (float32) against the naive loop (float64 on the same inputs): outputs, final
    state and the gradients of a random linear function of both w.r.t. q, k, v, beta and the initial state."""
    leaves = inputs(B, T, H, Dk, Dv, dtype=torch.float32, device=device, seed=seed, state=state)
    g = torch.Generator().manual_seed(seed + 1)
    do = torch.randn(B, T, H, Dv, generator=g, dtype=torch.float64).to(device)
    dht = torch.randn(B, H, Dk, Dv, generator=g, dtype=torch.float64).to(device)
    names = ["q", "k", "v", "beta", "h0"]
    results = {}
    for which, run, dtype in (("fast", fn, torch.float32), ("ref", delta_rule_naive, torch.float64)):
        xs = [None if x is None else x.detach().to(dtype).requires_grad_() for x in leaves]
        o, ht = run(*xs[:4], initial_state=xs[4], output_final_state=True)
        assert o.shape == (B, T, H, Dv) and ht.shape == (B, H, Dk, Dv)
        ((o.double() * do).sum() + (ht.double() * dht).sum()).backward()
        results[which] = {"o": o, "ht": ht, **{f"d{n}": x.grad for n, x in zip(names, xs) if x is not None}}
    return {key: rel_err(results["fast"][key], results["ref"][key]) for key in results["ref"]}


# ---------------------------------------------------------------- naive: the ground truth


def test_naive_matches_a_hand_worked_example():
    # B = H = 1, T = 2, Dk = Dv = 2; W_t is [Dv, Dk], the state S_t = W_t^T.
    # t=1: W_0 = 0, k = [1, 0], v = [2, 3], beta = 1/2:
    #      W_1 = 1/2 [2, 3]^T [1, 0] = [[1, 0], [1.5, 0]];            q = [1, 1]  -> o_1 = W_1 q = [1, 1.5]
    # t=2: k = [1, 1], v = [0, 1], beta = 1/2: W_1 k = [1, 1.5], v - W_1 k = [-1, -0.5],
    #      W_2 = W_1 + 1/2 [-1, -0.5]^T [1, 1] = [[0.5, -0.5], [1.25, -0.25]]; q = [2, -1] -> o_2 = [1.5, 2.75]
    q = torch.tensor([[1.0, 1.0], [2.0, -1.0]]).view(1, 2, 1, 2)
    k = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(1, 2, 1, 2)
    v = torch.tensor([[2.0, 3.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    beta = torch.tensor([0.5, 0.5]).view(1, 2, 1)
    o, S = delta_rule_naive(q, k, v, beta, output_final_state=True)
    torch.testing.assert_close(o, torch.tensor([[1.0, 1.5], [1.5, 2.75]]).view(1, 2, 1, 2))
    W2 = torch.tensor([[0.5, -0.5], [1.25, -0.25]])
    torch.testing.assert_close(S, W2.T.reshape(1, 1, 2, 2))
    assert delta_rule_naive(q, k, v, beta)[1] is None


def test_naive_with_beta_one_and_a_unit_key_stores_the_value():
    # beta = 1 and |k| = 1: W_t k_t = v_t exactly, so reading with q_t = k_t returns v_t
    B, T, H, Dk, Dv = 2, 6, 3, 4, 5
    q, k, v, _, h0 = inputs(B, T, H, Dk, Dv, dtype=torch.float64)
    o, _ = delta_rule_naive(k, k, v, torch.ones(B, T, H, dtype=torch.float64), initial_state=h0)
    torch.testing.assert_close(o, v)


def test_naive_gradcheck_in_float64():
    q, k, v, beta, h0 = inputs(1, 7, 2, 5, 3, dtype=torch.float64)
    leaves = [x.requires_grad_() for x in (q, k, v, beta, h0)]

    def f(q, k, v, beta, h0):
        return delta_rule_naive(q, k, v, beta, initial_state=h0, output_final_state=True)

    assert torch.autograd.gradcheck(f, leaves)


def test_naive_initial_state_carries_a_sequence_split_in_two():
    q, k, v, beta, h0 = inputs(2, 11, 2, 5, 3, dtype=torch.float64)
    o, ht = delta_rule_naive(q, k, v, beta, initial_state=h0, output_final_state=True)
    o1, h1 = delta_rule_naive(q[:, :4], k[:, :4], v[:, :4], beta[:, :4], initial_state=h0, output_final_state=True)
    o2, h2 = delta_rule_naive(q[:, 4:], k[:, 4:], v[:, 4:], beta[:, 4:], initial_state=h1, output_final_state=True)
    torch.testing.assert_close(torch.cat([o1, o2], dim=1), o)
    torch.testing.assert_close(h2, ht)
    # no initial state means W_0 = 0
    o0, _ = delta_rule_naive(q, k, v, beta)
    torch.testing.assert_close(o0, delta_rule_naive(q, k, v, beta, initial_state=torch.zeros_like(h0))[0])


def test_naive_rejects_bad_shapes():
    q, k, v, beta, h0 = inputs(1, 3, 2, 4, 5)
    with pytest.raises(ValueError, match="beta"):
        delta_rule_naive(q, k, v, beta[..., None])
    with pytest.raises(ValueError, match="initial_state"):
        delta_rule_naive(q, k, v, beta, initial_state=h0.transpose(-1, -2))
    with pytest.raises(ValueError, match="v must"):
        delta_rule_naive(q, k, v[:, :2], beta)


# ---------------------------------------------------------------- dispatch


def test_auto_uses_the_naive_loop_on_cpu_without_importing_fla():
    q, k, v, beta, h0 = inputs(1, 5, 2, 4, 3)
    had_fla = "fla" in sys.modules
    o, ht = delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True)
    ref = delta_rule_naive(q, k, v, beta, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o, ref[0])
    torch.testing.assert_close(ht, ref[1])
    assert ("fla" in sys.modules) == had_fla
    with pytest.raises(ValueError, match="backend"):
        delta_rule(q, k, v, beta, backend="fla")  # 0.2's name of the fused backend: one vocabulary now


def test_forced_triton_without_fla_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "fla", None)  # makes `import fla` fail and find_spec("fla") None
    fused_available.cache_clear()
    q, k, v, beta, _ = inputs(1, 3, 1, 2, 2)
    try:
        with pytest.raises(ImportError, match=FLA_PIN):
            delta_rule(q, k, v, beta, backend="triton")
    finally:
        fused_available.cache_clear()  # what it found without fla is not what the next test finds


@pytest.mark.skipif(not HAS_FLA, reason=f"needs fla-core: pip install '{FLA_PIN}'")
def test_forced_triton_on_cpu_tensors_without_the_interpreter_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v, beta, _ = inputs(1, 3, 1, 2, 2)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        delta_rule(q, k, v, beta, backend="triton")


# ---------------------------------------------------------------- fla's kernel against the naive loop

# (B, T, H, Dk, Dv, initial state): the interpreter costs ~1 s a case here, fla's import ~6 s (all of fla.ops).
# Dv = 13 > 8 splits the forward over two value blocks of the kernel. Errors seen: ~1e-7.
INTERPRET_CASES = [(2, 7, 2, 5, 3, True), (1, 13, 2, 8, 13, False)]
INTERPRET_TOL = 1e-5


def _interpreted_checks() -> None:
    """Run in a fresh interpreter with TRITON_INTERPRET=1 (Triton reads it when fla's kernels are defined)."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    for i, (*shape, state) in enumerate(INTERPRET_CASES):
        errs = compare_with_naive(delta_rule_fused, *shape, device="cpu", state=state, seed=i)
        print(shape, "h0" if state else "no h0", {key: f"{e:.1e}" for key, e in errs.items()})
        bad = {key: e for key, e in errs.items() if not e < INTERPRET_TOL}
        assert not bad, f"{shape} state={state}: relative errors above {INTERPRET_TOL}: {bad}"


@pytest.mark.skipif(not HAS_FLA, reason=f"needs fla-core: pip install '{FLA_PIN}'")
def test_fla_wrapper_matches_naive_under_the_triton_interpreter():
    # A subprocess: TRITON_INTERPRET must be set before fla defines its kernels, and must not leak into
    # this process (a CUDA test here needs fla's compiled kernels). CUDA is hidden so fla takes the CPU path.
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, __file__], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.skipif(not HAS_FLA, reason=f"needs fla-core: pip install '{FLA_PIN}'")
@pytest.mark.parametrize("state", [True, False])
def test_fla_wrapper_matches_naive_on_cuda(state):
    errs = compare_with_naive(delta_rule_fused, 2, 63, 2, 64, 64, device="cuda", state=state)
    assert all(e < 1e-4 for e in errs.values()), errs
    # auto picks fla on CUDA
    q, k, v, beta, h0 = inputs(2, 63, 2, 64, 64, device="cuda")
    o, ht = delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True)
    o_fla, ht_fla = delta_rule_fused(q, k, v, beta, initial_state=h0, output_final_state=True)
    assert torch.equal(o, o_fla) and torch.equal(ht, ht_fla)


if __name__ == "__main__":
    _interpreted_checks()
