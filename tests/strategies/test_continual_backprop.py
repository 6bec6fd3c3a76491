"""Continual backprop: utilities against a hand computation, which units are replaced and when,
what a replaced unit and its optimizer state look like, a run, and checkpoints."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from clframe.strategies.continual_backprop import ContinualBackprop, find_units
from torch import nn

from clframe.config import compose
from clframe.models.backbones.mlp import MLP
from clframe.models.heads.linear import LinearHead, MultiHead
from clframe.run.runner import build, fit


class Net(nn.Module):
    """``Linear(n_in, n_hidden) -> act -> Linear(n_hidden, 2)``; ``optimizer`` as on a CLModule."""

    def __init__(self, n_in: int = 3, n_hidden: int = 4, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(n_in, n_hidden), act(), nn.Linear(n_hidden, 2))
        self.optimizer: torch.optim.Optimizer | None = None

    def forward(self, x):
        return self.net(x)


class ConvNet(nn.Module):
    """``Conv(c_in, 5) -> act -> Conv(5, 4) -> act -> MaxPool(2) -> Flatten -> Linear(4 * 2 * 2, 2)`` on
    ``[B, c_in, 4, 4]`` images; ``optimizer`` as on a CLModule."""

    def __init__(self, c_in: int = 6, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(c_in, 5, 3, padding=1), act(), nn.Conv2d(5, 4, 3, padding=1), act(),
                                 nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 2))
        self.optimizer: torch.optim.Optimizer | None = None

    def forward(self, x):
        return self.net(x)


IMAGE = (6, 4, 4)  # ConvNet's input [C, H, W]


def batches(n: int, n_in: int | tuple[int, ...] = 3, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shape = n_in if isinstance(n_in, tuple) else (n_in,)
    return [(torch.randn(8, *shape, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(n)]


def step(model: Net, cb: ContinualBackprop, x, y, before_test=None) -> None:
    """One training step as ``CLModule.training_step`` runs it."""
    out = model(x)
    if model.optimizer is not None:
        model.optimizer.zero_grad()
        F.cross_entropy(out, y).backward()
        model.optimizer.step()
    if before_test is not None:
        before_test()
    cb.after_optimizer_step(SimpleNamespace(module=model))


def make(optimizer: str | None = None, n_in: int = 3, n_hidden: int = 4, act: type[nn.Module] = nn.ReLU,
         net: ConvNet | None = None, **kw) -> tuple[Net | ConvNet, ContinualBackprop]:
    """``Net(n_in, n_hidden, act)``, or ``net``, with the optimizer and a set-up strategy."""
    model = Net(n_in, n_hidden, act) if net is None else net
    if optimizer == "sgd":
        model.optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    elif optimizer == "adam":
        model.optimizer = torch.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    elif optimizer == "adamw":
        model.optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    cb = ContinualBackprop(**kw)
    cb.setup(model)
    return model, cb


# -- finding the hidden units -------------------------------------------------------------
def test_finds_every_hidden_layer_of_the_mlp_and_its_head_in_order():
    model = nn.Sequential(MLP((2, 3), hidden=(8, 6), dropout=0.1), LinearHead(6, 4))
    found = [(name, lin.out_features, type(act).__name__, nxt.in_features) for name, lin, act, nxt in
             find_units(model)]
    assert found == [("0.net.1", 8, "ReLU", 8), ("0.net.4", 6, "ReLU", 6)]
    assert find_units(model)[-1][3] is model[1].fc


def test_a_multihead_or_a_functional_activation_leaves_that_layer_out():
    multi = nn.Sequential(MLP((5,), hidden=(8, 6), activation="tanh"), MultiHead(6, 4, 2))
    assert [name for name, *_ in find_units(multi)] == ["0.net.1"]
    with pytest.raises(ValueError, match="no \\(Linear, activation module, Linear\\)"):
        ContinualBackprop().setup(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))


def test_a_shared_activation_module_is_refused():
    act = nn.ReLU()
    with pytest.raises(ValueError, match="shared"):
        find_units(nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 4), act, nn.Linear(4, 2)))


def test_evaluation_forwards_are_not_captured():
    model, cb = make()
    model.eval()
    model(torch.randn(5, 3))
    assert cb._acts == [None]
    model.train()
    model(torch.randn(5, 3))
    assert cb._acts[0].shape == (5, 4) and not cb._acts[0].requires_grad


# -- utilities -----------------------------------------------------------------------------
@pytest.mark.parametrize("utility", ["adaptable_contribution", "contribution"])
def test_running_mean_and_utility_match_a_hand_computation(utility):
    eta = 0.9
    model, cb = make("sgd", eta=eta, utility=utility, replacement_rate=0.0)
    w1, w2 = model.net[0], model.net[2]
    f, u = [0.0] * 4, [0.0] * 4
    for s, (x, y) in enumerate(batches(3), start=1):
        h = torch.relu(w1(x)).detach()
        step(model, cb, x, y)
        corr = 1 - eta**s
        for j in range(4):
            f[j] = eta * f[j] + (1 - eta) * sum(h[b, j].item() for b in range(8)) / 8
            w_out = sum(abs(w2.weight[c, j].item()) for c in range(2)) / 2  # weights after the step
            w_in = sum(abs(w1.weight[j, c].item()) for c in range(3)) / 3
            if utility == "contribution":
                new = w_out * sum(abs(h[b, j].item()) for b in range(8)) / 8
            else:
                new = w_out * sum(abs(h[b, j].item() - f[j] / corr) for b in range(8)) / 8 / w_in
            u[j] = eta * u[j] + (1 - eta) * new
        assert cb.ages[0].tolist() == [s] * 4
        torch.testing.assert_close(cb.mean[0], torch.tensor(f), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(cb.util[0], torch.tensor(u), rtol=1e-5, atol=1e-7)
    assert min(u) > 0 or utility == "contribution"


# -- which units, and when ----------------------------------------------------------------
def replaced_now(cb: ContinualBackprop, layer: int = 0) -> list[int]:
    return (cb.ages[layer] == 0).nonzero().flatten().tolist()


def test_only_mature_units_are_replaced_lowest_utility_first():
    model, cb = make(maturity=2, replacement_rate=0.5, act=nn.Tanh)
    twin = ContinualBackprop(maturity=2, replacement_rate=0.0)  # sees the utilities before replacement
    twin.setup(model)
    history = []
    for t, (x, y) in enumerate(batches(7), start=1):
        ages_before = cb.ages[0] + 1
        step(model, cb, x, y, before_test=lambda: twin.after_optimizer_step(SimpleNamespace(module=model)))
        new = replaced_now(cb)
        history.append(len(new))
        assert all(ages_before[j] > 2 for j in new)
        # the host's count of eligible units agrees with the ages on the device
        assert 4 - sum(c for _, c in cb.recent[0]) == int((cb.ages[0] > 2).sum())
        if t == 3:
            young = new
            assert sorted(new) == sorted(twin.util[0].topk(2, largest=False).indices.tolist())
        if t == 4:
            # zero outgoing weights give the young units the lowest utility, but they are not eligible
            assert twin.util[0][young].max() < twin.util[0][new].min() and not set(new) & set(young)
    # ages 1, 2: nothing eligible; 3: 4 eligible -> 2 replaced; 4: 2 eligible -> 1; 5: 1 eligible
    # (0.5 carried); 6: 3 eligible -> 2 (0.5 + 1.5); 7: 2 eligible -> 1
    assert history == [0, 0, 2, 1, 0, 2, 1]
    assert cb.replaced == [6]


def test_the_fraction_is_carried_over_steps():
    # 4 units, all eligible every step (maturity 0), 0.1 * 4 = 0.4 units per step
    model, cb = make(maturity=0, replacement_rate=0.1)
    counts = []
    for x, y in batches(10):
        before = cb.replaced[0]
        step(model, cb, x, y)
        counts.append(cb.replaced[0] - before)
    assert counts == [0, 0, 1, 0, 1, 0, 0, 1, 0, 1]
    assert cb.carry[0] == pytest.approx(0.0, abs=1e-9)


def test_a_zero_rate_replaces_nothing():
    model, cb = make("sgd", maturity=0, replacement_rate=0.0)
    for x, y in batches(5):
        step(model, cb, x, y)
    assert cb.replaced == [0] and cb.ages[0].tolist() == [5] * 4


# -- a replaced unit -----------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_a_replaced_unit_is_fresh_and_only_its_optimizer_entries_are_reset(optimizer):
    n_in = 64
    # tanh: no dead unit, so every optimizer entry of the replaced unit is non-zero before the reset
    model, cb = make(optimizer, n_in=n_in, n_hidden=5, act=nn.Tanh, maturity=2, replacement_rate=0.2)
    lin, nxt, opt = model.net[0], model.net[2], model.optimizer
    xs = batches(3, n_in=n_in)
    for x, y in xs[:2]:
        step(model, cb, x, y)
    snap = {}

    def snapshot():
        snap["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        snap["opt"] = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()}

    step(model, cb, *xs[2], before_test=snapshot)
    (j,) = replaced_now(cb)  # 0.2 * 5 = one unit at the first step with eligible units
    others = [i for i in range(5) if i != j]
    old = snap["params"]
    bound = 1 / math.sqrt(n_in)
    assert torch.isfinite(lin.weight[j]).all() and not torch.equal(lin.weight[j], old["net.0.weight"][j])
    assert lin.weight[j].abs().max() <= bound and lin.weight[j].abs().max() > 0.8 * bound
    assert lin.bias[j] == 0 and nxt.weight[:, j].eq(0).all()
    assert cb.util[0][j] == 0 and cb.mean[0][j] == 0 and cb.ages[0][j] == 0
    assert cb.ages[0][others].eq(3).all()
    torch.testing.assert_close(lin.weight[others], old["net.0.weight"][others], rtol=0, atol=0)
    torch.testing.assert_close(lin.bias[others], old["net.0.bias"][others], rtol=0, atol=0)
    torch.testing.assert_close(nxt.weight[:, others], old["net.2.weight"][:, others], rtol=0, atol=0)
    torch.testing.assert_close(nxt.bias, old["net.2.bias"], rtol=0, atol=0)
    keys = {"sgd": {"momentum_buffer"}, "adam": {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
            "adamw": {"exp_avg", "exp_avg_sq"}}[optimizer]
    for p, rows in ((lin.weight, True), (lin.bias, True), (nxt.weight, False)):
        state, before = opt.state[p], snap["opt"][p]
        assert keys <= set(state)
        for k in keys:
            hit, kept = (state[k][j], state[k][others]) if rows else (state[k][:, j], state[k][:, others])
            want = before[k][others] if rows else before[k][:, others]
            assert hit.eq(0).all() and torch.equal(kept, want)
            assert (before[k][j] if rows else before[k][:, j]).ne(0).any()  # it was not zero already
        if "step" in state:  # one step count per tensor in torch: left alone
            assert torch.equal(state["step"], before["step"])
    for k, v in opt.state[nxt.bias].items():
        assert torch.equal(v, snap["opt"][nxt.bias][k])


def test_new_weights_come_from_the_seeded_generator():
    def run(seed):
        model, cb = make(maturity=0, replacement_rate=0.5, seed=seed)
        for x, y in batches(2):
            step(model, cb, x, y)
        return model.net[0].weight.detach().clone()

    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))


def test_bad_settings_name_the_parameter():
    with pytest.raises(ValueError, match="'replacement_rate' must be in \\[0, 1\\]"):
        ContinualBackprop(replacement_rate=1.5)
    with pytest.raises(ValueError, match="'eta'"):
        ContinualBackprop(eta=1.0)


# -- checkpoints ---------------------------------------------------------------------------
def save_load(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_dict_round_trip_continues_exactly():
    model, cb = make("adam", maturity=1, replacement_rate=0.2)
    xs = batches(12)
    for x, y in xs[:6]:
        step(model, cb, x, y)
    assert cb.replaced[0] > 0
    saved = save_load({"model": model.state_dict(), "opt": model.optimizer.state_dict(), "cb": cb.state_dict()})
    model2, cb2 = make("adam", maturity=1, replacement_rate=0.2, seed=99)
    model2.load_state_dict(saved["model"])
    model2.optimizer.load_state_dict(saved["opt"])
    cb2.load_state_dict(saved["cb"])
    for x, y in xs[6:]:
        step(model, cb, x, y)
        step(model2, cb2, x, y)
    assert cb.replaced[0] > 2 and cb2.replaced == cb.replaced
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    s1, s2 = cb.state_dict(), cb2.state_dict()
    assert s1["carry"] == s2["carry"] and s1["recent"] == s2["recent"]
    for k in ("ages", "util", "mean"):
        assert all(torch.equal(a, b) for a, b in zip(s1[k], s2[k]))


def test_state_of_another_model_is_refused():
    _, cb = make()
    other = ContinualBackprop()
    other.setup(nn.Sequential(MLP((3,), hidden=(4,)), LinearHead(4, 2)))
    with pytest.raises(ValueError, match="state is for layers"):
        other.load_state_dict(cb.state_dict())


# -- in a run ------------------------------------------------------------------------------
@pytest.mark.parametrize("optim", [["train.momentum=0.9"], ["train.optimizer=adam", "train.lr=0.01"]])
def test_a_run_replaces_units_and_learns_as_well_as_naive(tiny, optim):
    cfg = ["strategy=continual_backprop", "strategies.continual_backprop.maturity=5",
           "strategies.continual_backprop.replacement_rate=0.01"]
    built = build(compose(tiny + cfg + optim))
    fit(built)
    naive = build(compose(tiny + optim))
    fit(naive)
    cb = built.module.strategies["continual_backprop"]
    assert [name for name, *_ in cb.layers] == ["backbone.net.1"] and cb.layers[0][3] is built.module.head.fc
    assert cb.replaced[0] >= 5  # 0.01 * 32 units per step over ~40 mature steps
    assert all(math.isfinite(v) for row in built.module.loss_log for v in row.values())
    # 22 steps per experience: far from converged (about 0.5 at best), but well above chance (0.1)
    R, R_naive = built.module.acc_matrix, naive.module.acc_matrix
    assert R[0][0] > 0.3
    assert R[0][0] > R_naive[0][0] - 0.1 and R[1][1] > R_naive[1][1] - 0.1


# -- conv channels -------------------------------------------------------------------------
def test_finds_conv_channels_read_by_a_conv_or_by_a_linear_after_flatten():
    model = ConvNet()
    conv_next, flat_next = units = find_units(model)
    found = [(name, type(layer).__name__, layer.weight.shape[0], type(nxt).__name__, tuple(nxt.weight.shape))
             for name, layer, _, nxt in units]
    assert found == [("net.0", "Conv2d", 5, "Conv2d", (4, 5, 3, 3)), ("net.2", "Conv2d", 4, "Linear", (2, 16))]
    assert conv_next.nxt is model.net[2] and flat_next.nxt is model.net[6]
    # channel c's outgoing weights: the next conv's input slice, or its 2x2 (pooled) columns of the Linear
    assert conv_next.outgoing(model.net[2].weight).shape == (4, 5, 3, 3)
    fc = model.net[6].weight
    assert flat_next.outgoing(fc).shape == (2, 4, 4) and torch.equal(flat_next.outgoing(fc)[:, 1], fc[:, 4:8])
    mixed = nn.Sequential(nn.Conv2d(1, 3, 3), nn.GELU(), nn.Dropout2d(0.1), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Dropout(0.1), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 2))
    assert [(name, nxt.in_features) for name, _, _, nxt in find_units(mixed)] == [("0", 12), ("6", 5)]


@pytest.mark.parametrize("model", [
    nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Linear(4, 2)),  # a Linear over the width, not the channels
    nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(10, 2)),  # 10 columns: not 3 channels
    nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 3)),
    nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2)),
], ids=["no-flatten", "columns", "batchnorm", "grouped"])
def test_channels_not_read_one_by_one_are_left_out(model):
    assert find_units(model) == []


@pytest.mark.parametrize("utility", ["adaptable_contribution", "contribution"])
def test_channel_utilities_match_a_hand_computation(utility):
    eta = 0.9
    model, cb = make("sgd", net=ConvNet(), eta=eta, utility=utility, replacement_rate=0.0)
    conv1, conv2, fc = model.net[0], model.net[2], model.net[6]
    f, u = [torch.zeros(5), torch.zeros(4)], [torch.zeros(5), torch.zeros(4)]

    def per_channel(t):  # [B, C, H, W] -> [C]
        return t.transpose(0, 1).flatten(1).mean(1)

    for s, (x, y) in enumerate(batches(3, IMAGE), start=1):
        h1 = torch.relu(conv1(x)).detach()
        hs = (h1, torch.relu(conv2(h1)).detach())  # before the pooling
        step(model, cb, x, y)
        corr = 1 - eta**s
        w_out = (conv2.weight.abs().mean((0, 2, 3)), torch.stack([fc.weight[:, 4 * c:4 * c + 4].abs().mean()
                                                                  for c in range(4)]))
        w_in = (conv1.weight.abs().mean((1, 2, 3)), conv2.weight.abs().mean((1, 2, 3)))
        for i, h in enumerate(hs):
            f[i] = eta * f[i] + (1 - eta) * per_channel(h)
            if utility == "contribution":
                new = w_out[i] * per_channel(h.abs())
            else:
                new = w_out[i] * per_channel((h - (f[i] / corr)[:, None, None]).abs()) / w_in[i]
            u[i] = (eta * u[i] + (1 - eta) * new).detach()
            torch.testing.assert_close(cb.mean[i], f[i], rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(cb.util[i], u[i], rtol=1e-5, atol=1e-7)
    assert all(v.min() > 0 for v in u) or utility == "contribution"


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_a_replaced_channel_is_fresh_and_only_its_slices_are_reset(optimizer):
    # tanh: no dead channel; 0.25 * 5 and 0.25 * 4: one channel of each layer at the first eligible step
    model, cb = make(optimizer, net=ConvNet(act=nn.Tanh), maturity=2, replacement_rate=0.25)
    conv1, conv2, fc, opt = model.net[0], model.net[2], model.net[6], model.optimizer
    xs = batches(3, IMAGE)
    for x, y in xs[:2]:
        step(model, cb, x, y)
    snap = {}

    def snapshot():
        snap["params"] = {p: p.detach().clone() for p in model.parameters()}
        snap["opt"] = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()}

    step(model, cb, *xs[2], before_test=snapshot)
    (j0,), (j1,) = replaced_now(cb, 0), replaced_now(cb, 1)
    assert cb.ages[0].eq(3).sum() == 4 and cb.ages[1].eq(3).sum() == 3

    def mask(p, *where):
        m = torch.zeros_like(p, dtype=torch.bool)
        for w in where:
            m[w] = True
        return m

    fresh = {conv1.weight: mask(conv1.weight, j0), conv2.weight: mask(conv2.weight, j1)}
    # channel j0's outgoing slice of conv2, except where channel j1's new kernel went; j1's 4 columns of fc
    zero = {conv1.bias: mask(conv1.bias, j0), conv2.bias: mask(conv2.bias, j1),
            conv2.weight: mask(conv2.weight, (slice(None), j0)) & ~fresh[conv2.weight],
            fc.weight: mask(fc.weight, (slice(None), slice(4 * j1, 4 * j1 + 4)))}
    keys = {"sgd": {"momentum_buffer"}, "adam": {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
            "adamw": {"exp_avg", "exp_avg_sq"}}[optimizer]
    for p in model.parameters():
        old, none = snap["params"][p], torch.zeros_like(p, dtype=torch.bool)
        f, z = fresh.get(p, none), zero.get(p, none)
        assert torch.equal(p[~(f | z)], old[~(f | z)])
        assert p[z].eq(0).all() and old[z].ne(0).all()
        if f.any():  # a new kernel from the layer's default init U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1 / math.sqrt(p[0].numel())
            assert not torch.equal(p[f], old[f]) and p[f].abs().max() <= bound
            assert abs(p[f].std().item() / (bound / math.sqrt(3)) - 1) < 0.25 and abs(p[f].mean()) < 0.25 * bound
        state, before = opt.state[p], snap["opt"][p]
        assert keys <= set(state)
        for k in keys:
            assert state[k][f | z].eq(0).all() and before[k][f | z].ne(0).any() == (f | z).any()
            assert torch.equal(state[k][~(f | z)], before[k][~(f | z)])
        if "step" in state:  # one step count per tensor in torch: left alone
            assert torch.equal(state["step"], before["step"])


def test_a_conv_run_replaces_channels_at_the_rate_and_learns_as_well_as_naive():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, *IMAGE, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    rate, maturity, steps = 0.05, 5, 80

    def run(replacement_rate):
        model, cb = make("adam", net=ConvNet(), maturity=maturity, replacement_rate=replacement_rate)
        for t in range(steps):
            b = slice(8 * (t % 8), 8 * (t % 8) + 8)
            step(model, cb, x[b], y[b])
            # the host's count of eligible channels agrees with the ages on the device
            for i, unit in enumerate(cb.layers):
                assert unit.size - sum(c for _, c in cb.recent[i]) == int((cb.ages[i] > maturity).sum())
        return cb, (model(x).argmax(1) == y).float().mean().item()

    cb, acc = run(rate)
    _, acc_naive = run(0.0)
    # rate * eligible channels per step once the first ones mature; about rate * maturity of them are young
    for i, size in enumerate((5, 4)):
        expected = rate * size * (steps - maturity) / (1 + rate * maturity)
        assert expected - 2 <= cb.replaced[i] <= rate * size * (steps - maturity)
    assert acc > 0.8 and acc > acc_naive - 0.1


@pytest.mark.parametrize(("act", "gain"), [(nn.ReLU, math.sqrt(2)), (nn.Tanh, 5 / 3)])
def test_kaiming_init_redraws_in_the_activations_kaiming_range(act, gain):
    n_in = 64
    model, cb = make(n_in=n_in, n_hidden=5, act=act, maturity=2, replacement_rate=0.2, init="kaiming")
    for x, y in batches(3, n_in=n_in):
        step(model, cb, x, y)
    (j,) = replaced_now(cb)
    bound = gain * math.sqrt(3 / n_in)  # kaiming_uniform_: gain * sqrt(3 / fan_in)
    w = model.net[0].weight[j]
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
