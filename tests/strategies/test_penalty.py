"""The penalty mechanics against straightforward per-parameter references (values and gradients, odd
sizes), and the penalty strategies' steps: no host reads, and exact restores from a state round trip."""

from __future__ import annotations

import io

import pytest
import torch
from clframe.strategies._penalty import FlatParams, Quadratic, sort_order
from clframe.strategies._spectral_norm import as_matrix, power_iteration, power_iterations, spectral_penalty
from clframe.strategies.ewc import EWC
from clframe.strategies.l2_init import L2Init
from clframe.strategies.spectral import Spectral
from clframe.strategies.wasserstein_init import WassersteinInit
from torch import nn

from clframe.data.stream import Experience, TensorData

SHAPES = [(7, 5), (5,), (3, 2, 3), (1,)]


def params(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]


def grads(loss: torch.Tensor, ps: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, ps))


# -- Quadratic ---------------------------------------------------------------------
def reference(ps, anchors, weights):
    """``sum_k sum_p sum w (p - a)^2``, one parameter and one anchor at a time."""
    total = torch.zeros(())
    for anchor, weight in zip(anchors, weights):
        for p, a, w in zip(ps, anchor, weight):
            total = total + (w * (p - a) ** 2).sum()
    return total


@pytest.mark.parametrize("k", [None, 1, 3])  # None: an anchor [N]; else K anchors [K, N]
@pytest.mark.parametrize("weighted", [True, False])
def test_quadratic_equals_the_per_parameter_sum_and_so_does_its_gradient(k, weighted):
    ps, g = params(), torch.Generator().manual_seed(1)
    anchors = [[p.detach() + torch.randn(p.shape, generator=g) for p in ps] for _ in range(k or 1)]
    weights = [[torch.rand(p.shape, generator=g) if weighted else torch.ones(p.shape) for p in ps]
               for _ in range(k or 1)]
    flat = FlatParams(ps)
    anchor, weight = (torch.stack([flat.flatten(t) for t in ts]) for ts in (anchors, weights))
    if k is None:
        anchor, weight = anchor[0], weight[0]
    got = Quadratic(flat, anchor, weight if weighted else None)(scale=2.5)
    want = 2.5 * reference(ps, anchors, weights)
    assert got.shape == ()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    for a, b in zip(grads(got, ps), grads(want, ps)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_quadratic_gradient_adds_to_other_terms_and_later_calls_leave_it_alone():
    ps = params()
    flat = FlatParams(ps)
    anchor = flat.flatten([p.detach() + 1 for p in ps])
    q = Quadratic(flat, anchor)
    (q(0.5) + sum((p**3).sum() for p in ps)).backward()
    want = [0.5 * 2 * (p.detach() - (p.detach() + 1)) + 3 * p.detach() ** 2 for p in ps]
    for p, w in zip(ps, want):
        torch.testing.assert_close(p.grad, w)
    before = [p.grad.clone() for p in ps]
    q(0.5)  # a new forward reuses buffers: the gradients already handed out must not change
    assert all(torch.equal(p.grad, b) for p, b in zip(ps, before))


def test_quadratic_anchor_given_per_call_replaces_the_stored_one():
    ps = params()
    flat = FlatParams(ps)
    q = Quadratic(flat, torch.zeros(len(flat)))
    other = [torch.full(p.shape, 0.5) for p in ps]
    torch.testing.assert_close(q(anchor=flat.flatten(other)), reference(ps, [other], [[1] * len(ps)]))
    torch.testing.assert_close(q(), reference(ps, [[torch.zeros(p.shape) for p in ps]], [[1] * len(ps)]))


def test_quadratic_twice_backward_over_a_retained_graph_and_weights_changed_before_backward():
    ps = params()
    flat = FlatParams(ps)
    q = Quadratic(flat, torch.zeros(len(flat)), torch.rand(len(flat)))
    loss = q(3.0)
    first = list(torch.autograd.grad(loss, ps, retain_graph=True))
    second = grads(loss, ps)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    loss = q(3.0)
    with torch.no_grad():
        ps[0].add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# -- sort order ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [1, 257, 70_000])  # 70k: the size at which torch sorts integers by radix
def test_sort_order_sorts_like_torch_sort(dtype, n):
    g = torch.Generator().manual_seed(n)
    w = torch.randn(n, generator=g).to(dtype)
    special = torch.tensor([-0.0, 0.0, 1e-40, -1e-40, float("inf"), -float("inf"), 2.0, 2.0, -3.0]).to(dtype)
    w[: min(n, len(special))] = special[:n]
    order = sort_order(w)
    assert torch.equal(w[order], w.sort().values)
    assert torch.equal(order.sort().values, torch.arange(n))


# -- spectral penalty ------------------------------------------------------------------
def test_spectral_penalty_equals_per_layer_power_iteration_and_autograd():
    g = torch.Generator().manual_seed(2)
    weights = [torch.randn(s, generator=g).requires_grad_() for s in [(7, 5), (4, 3, 3, 3), (3, 7)]]
    biases = [torch.randn(s, generator=g).requires_grad_() for s in [(7,), (3,)]]
    starts = [torch.randn(w.shape[0], generator=g) for w in weights]
    us, vs, sigma = power_iterations([as_matrix(w) for w in weights], [u.view(-1, 1) for u in starts], 2)
    got = spectral_penalty(weights, us, vs, sigma, FlatParams(biases), k=3.0, bias_weight=0.5, scale=0.7)
    want = torch.zeros(())
    for w, u0, u, v in zip(weights, starts, us, vs):
        u_ref, v_ref = power_iteration(as_matrix(w.detach()), u0, 2)
        torch.testing.assert_close(u.view(-1), u_ref, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(v.view(-1), v_ref, rtol=1e-6, atol=1e-7)
        want = want + ((u_ref @ as_matrix(w) @ v_ref) ** 3 - 1) ** 2
    want = 0.7 * (want + 0.5 * sum((b**2).sum() for b in biases))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    for a, b in zip(grads(got, weights + biases), grads(want, weights + biases)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * b.abs().max().item())


# -- the strategies' steps ---------------------------------------------------------------
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x, t):
        return self.fc2(torch.tanh(self.fc1(x)))


def anchored(name: str) -> tuple[nn.Module, object]:
    """A net and the strategy ``name`` set up on it, its penalty active and away from zero."""
    net = Net()
    strategy = {"ewc": EWC(), "l2_init": L2Init(), "wasserstein_init": WassersteinInit(), "spectral": Spectral()}[name]
    strategy.setup(net)
    if name == "ewc":
        g = torch.Generator().manual_seed(1)
        d = TensorData(torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g), torch.zeros(16).long())
        strategy.on_experience_end(Experience(0, d, d, [0, 1, 2]), net)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.3).add_(0.1)
    return net, strategy


NAMES = ["ewc", "l2_init", "wasserstein_init", "spectral"]


@pytest.mark.parametrize("name", NAMES)
def test_a_penalty_step_reads_no_tensor_to_the_host(name, monkeypatch):
    net, strategy = anchored(name)
    strategy.penalty()  # the first call after an anchor packs it; the steps after it are checked

    def refuse(*args, **kwargs):
        raise AssertionError("a host read in the step")

    for attr in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, attr, refuse)
    for _ in range(2):
        strategy.penalty().backward()


@pytest.mark.parametrize("name", NAMES)
def test_a_state_round_trip_restores_the_penalty_and_its_gradient_exactly(name):
    net, strategy = anchored(name)
    buf = io.BytesIO()
    torch.save(strategy.state_dict(), buf)
    buf.seek(0)
    restored = type(strategy)()
    restored.setup(net)
    restored.load_state_dict(torch.load(buf))
    a, b = strategy.penalty(), restored.penalty()
    assert torch.equal(a, b)
    assert all(torch.equal(x, y) for x, y in zip(grads(a, list(net.parameters())), grads(b, list(net.parameters()))))
