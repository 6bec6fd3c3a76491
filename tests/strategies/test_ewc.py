"""EWC: penalty, Fisher estimates, separate/online modes, and that it reduces forgetting."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from clframe.strategies._fisher import diagonal_fisher
from clframe.strategies.ewc import EWC
from torch import nn

from clframe.config import compose
from clframe.data.stream import Experience, TensorData
from clframe.run.runner import build, fit


class Net(nn.Module):
    """A tiny ``model(x, t)`` with two layers and (optionally) dropout."""

    def __init__(self, dropout: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(4, 6)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x, t):
        return self.fc2(self.drop(torch.tanh(self.fc1(x))))


def data(n: int = 20, seed: int = 1) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    return TensorData(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g), torch.zeros(n).long())


def experience(i: int, d: TensorData) -> Experience:
    return Experience(index=i, train=d, eval=d, classes_in_this_experience=[0, 1, 2])


def perturb(model: nn.Module, scale: float = 0.3, seed: int = 5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def hand_penalty(model, fishers, anchors, lam):
    total = 0.0
    for f, a in zip(fishers, anchors):
        for n, p in model.named_parameters():
            if n in f and f[n].shape == p.shape:
                total += (f[n] * (p.detach() - a[n]) ** 2).sum().item()
    return lam * total


# -- the Fisher -------------------------------------------------------------------
def test_empirical_fisher_is_mean_of_squared_minibatch_grads():
    model, d = Net(), data(20)
    got = diagonal_fisher(model, d, "empirical", batch_size=6)
    params = dict(model.named_parameters())
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    batches = [(0, 6), (6, 12), (12, 18), (18, 20)]  # the last, partial minibatch counts as one
    for a, b in batches:
        grads = torch.autograd.grad(F.cross_entropy(model(d.x[a:b], d.t[a:b]), d.y[a:b]), list(params.values()))
        for n, g in zip(params, grads):
            expected[n] += g**2 / len(batches)
    assert set(got) == set(params)
    for n in params:
        torch.testing.assert_close(got[n], expected[n])


def per_sample_by_hand(model, d, n=None):
    params = dict(model.named_parameters())
    n = len(d) if n is None else n
    expected = {k: torch.zeros_like(p) for k, p in params.items()}
    for i in range(n):
        loss = F.cross_entropy(model(d.x[i : i + 1], d.t[i : i + 1]), d.y[i : i + 1])
        for k, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
            expected[k] += g**2 / n
    return expected


def test_per_sample_fisher_is_mean_of_squared_per_sample_grads_and_ignores_batch_size():
    model, d = Net(), data(20)
    expected = per_sample_by_hand(model, d)
    for bs in (1, 7, 32):
        got = diagonal_fisher(model, d, "per_sample", batch_size=bs)
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-7)


def test_empirical_fisher_scales_with_batch_size_but_per_sample_does_not():
    model, d = Net(), data(64)
    small = diagonal_fisher(model, d, "empirical", batch_size=1)
    big = diagonal_fisher(model, d, "empirical", batch_size=32)
    ps = diagonal_fisher(model, d, "per_sample", batch_size=32)
    # batch size 1: every minibatch is one sample, so the two estimates coincide
    for k in small:
        torch.testing.assert_close(small[k], ps[k], rtol=1e-5, atol=1e-7)
    assert sum(v.sum() for v in big.values()) < 0.5 * sum(v.sum() for v in small.values())


def test_fisher_max_samples_uses_only_the_first_samples():
    model, d = Net(), data(20)
    got = diagonal_fisher(model, d, "per_sample", batch_size=4, max_samples=9)
    expected = per_sample_by_hand(model, d, n=9)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["empirical", "per_sample"])
def test_fisher_runs_in_eval_mode_and_restores_training_mode(kind):
    model, d = Net(dropout=0.5), data(20)
    model.train()
    a = diagonal_fisher(model, d, kind, batch_size=5)
    b = diagonal_fisher(model, d, kind, batch_size=5)
    assert model.training
    model.eval()
    c = diagonal_fisher(model, d, kind, batch_size=5)
    for k in a:  # no dropout noise: identical estimates
        torch.testing.assert_close(a[k], b[k])
        torch.testing.assert_close(a[k], c[k])
    assert not model.training


def test_fisher_skips_frozen_parameters():
    model, d = Net(), data(10)
    model.fc1.weight.requires_grad_(False)
    f = diagonal_fisher(model, d, "empirical", batch_size=4)
    assert "fc1.weight" not in f and "fc1.bias" in f


# -- the penalty -------------------------------------------------------------------
def test_no_penalty_before_the_first_experience():
    ewc = EWC()
    ewc.setup(Net())
    assert ewc.penalty() is None


def test_penalty_matches_hand_computation_with_manual_fishers():
    model = Net()
    ewc = EWC(ewc_lambda=3.5)
    ewc.setup(model)
    g = torch.Generator().manual_seed(0)
    named = dict(model.named_parameters())
    ewc.fishers = [{n: torch.rand(p.shape, generator=g) for n, p in named.items()}]
    ewc.anchors = [{n: p.detach() + torch.randn(p.shape, generator=g) for n, p in named.items()}]
    expected = hand_penalty(model, ewc.fishers, ewc.anchors, 3.5)
    assert expected > 0
    assert ewc.penalty().item() == pytest.approx(expected, rel=1e-5)


def test_penalty_is_zero_at_the_anchor_and_its_gradient_is_2_lambda_f_delta():
    model, d = Net(), data(16)
    ewc = EWC(ewc_lambda=10.0)
    ewc.setup(model)
    ewc.on_experience_end(experience(0, d), model)
    assert ewc.penalty().item() == 0.0
    perturb(model)
    pen = ewc.penalty()
    grads = torch.autograd.grad(pen, list(model.parameters()))
    for (n, p), g in zip(model.named_parameters(), grads):
        torch.testing.assert_close(g, 2 * 10.0 * ewc.fishers[0][n] * (p.detach() - ewc.anchors[0][n]))


def test_separate_mode_keeps_one_term_per_experience():
    model = Net()
    ewc = EWC(ewc_lambda=2.0, mode="separate", fisher="per_sample")
    ewc.setup(model)
    ewc.on_experience_end(experience(0, data(20, seed=1)), model)
    perturb(model, seed=6)
    ewc.on_experience_end(experience(1, data(20, seed=2)), model)
    perturb(model, seed=7)
    assert len(ewc.fishers) == len(ewc.anchors) == 2
    # each (Fisher, anchor) pair is the Fisher and weights at the end of its experience
    assert not torch.equal(ewc.anchors[0]["fc1.weight"], ewc.anchors[1]["fc1.weight"])
    expected = hand_penalty(model, ewc.fishers, ewc.anchors, 2.0)
    each = [hand_penalty(model, [f], [a], 2.0) for f, a in zip(ewc.fishers, ewc.anchors)]
    assert expected == pytest.approx(sum(each))
    assert min(each) > 0
    assert ewc.penalty().item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("gamma", [1.0, 0.3])
def test_online_mode_keeps_one_decayed_fisher_anchored_at_the_latest_weights(gamma):
    model = Net()
    ewc = EWC(ewc_lambda=2.0, mode="online", gamma=gamma, fisher="empirical", fisher_batch_size=8)
    ewc.setup(model)
    d0, d1 = data(20, seed=1), data(20, seed=2)
    ewc.on_experience_end(experience(0, d0), model)
    f_old = {k: v.clone() for k, v in ewc.fishers[0].items()}
    perturb(model, seed=6)
    f_new = diagonal_fisher(model, d1, "empirical", batch_size=8)
    weights_now = {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc.on_experience_end(experience(1, d1), model)
    assert len(ewc.fishers) == len(ewc.anchors) == 1
    for k in f_old:
        torch.testing.assert_close(ewc.fishers[0][k], gamma * f_old[k] + f_new[k])
        torch.testing.assert_close(ewc.anchors[0][k], weights_now[k])
    perturb(model, seed=7)
    expected = hand_penalty(model, ewc.fishers, ewc.anchors, 2.0)
    assert ewc.penalty().item() == pytest.approx(expected, rel=1e-5)


def test_anchor_is_a_copy_not_a_view_of_the_weights():
    model = Net()
    ewc = EWC()
    ewc.setup(model)
    ewc.on_experience_end(experience(0, data()), model)
    before = ewc.anchors[0]["fc2.bias"].clone()
    perturb(model)
    assert torch.equal(ewc.anchors[0]["fc2.bias"], before)


def test_parameters_missing_from_the_anchor_or_with_a_new_shape_are_skipped():
    model = Net()
    ewc = EWC(ewc_lambda=1.5)
    ewc.setup(model)
    ewc.on_experience_end(experience(0, data()), model)
    # the model grows after the anchor: a new parameter, and a layer replaced by a wider one
    model.extra = nn.Parameter(torch.ones(3))
    model.fc2 = nn.Linear(6, 5)
    ewc.setup(model)
    perturb(model)
    kept = ["fc1.weight", "fc1.bias"]
    expected = 1.5 * sum(
        (ewc.fishers[0][n] * (dict(model.named_parameters())[n].detach() - ewc.anchors[0][n]) ** 2).sum().item()
        for n in kept
    )
    assert expected > 0
    assert ewc.penalty().item() == pytest.approx(expected, rel=1e-5)
    assert "extra" not in ewc.fishers[0]


def reference_penalty(model, fishers, anchors, lam):
    """The penalty one anchor and one parameter at a time, through autograd: the ground truth."""
    total = torch.zeros(())
    for f, a in zip(fishers, anchors):
        for n, p in model.named_parameters():
            if n in f and f[n].shape == p.shape:
                total = total + (f[n] * (p - a[n]) ** 2).sum()
    return lam * total


def test_penalty_and_gradient_equal_the_per_parameter_reference_over_anchors_of_a_growing_model():
    model = Net()
    ewc = EWC(ewc_lambda=3.0, fisher="per_sample")
    ewc.setup(model)
    ewc.on_experience_end(experience(0, data(20, seed=1)), model)
    perturb(model, seed=6)
    model.fc2 = nn.Linear(6, 5)  # a wider head after the first anchor: only the second one covers it
    ewc.setup(model)
    ewc.on_experience_end(experience(1, data(20, seed=2)), model)
    model.late = nn.Parameter(torch.ones(2))  # created after both anchors: no penalty, no gradient
    ewc.setup(model)
    perturb(model, seed=7)
    params = list(model.parameters())
    got, want = ewc.penalty(), reference_penalty(model, ewc.fishers, ewc.anchors, 3.0)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    got_g = torch.autograd.grad(got, params, allow_unused=True)
    want_g = torch.autograd.grad(want, params, allow_unused=True)
    for (n, _), a, b in zip(model.named_parameters(), got_g, want_g):
        if n == "late":
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_state_saved_as_separate_tensors_loads_and_gives_the_same_penalty():
    # the state as checkpoints hold it: one tensor per parameter, not views of one buffer
    model = Net()
    ewc = EWC(ewc_lambda=2.0)
    ewc.setup(model)
    ewc.on_experience_end(experience(0, data()), model)
    perturb(model)
    state = {k: [{n: t.clone() for n, t in d.items()} for d in v] for k, v in ewc.state_dict().items()}
    restored = EWC(ewc_lambda=2.0)
    restored.setup(model)
    restored.load_state_dict(state)
    assert torch.equal(restored.penalty(), ewc.penalty())
    torch.testing.assert_close(restored.penalty(), reference_penalty(model, state["fishers"], state["anchors"], 2.0),
                               rtol=1e-6, atol=0)


def test_penalty_with_no_matching_parameters_is_none():
    model = Net()
    ewc = EWC()
    ewc.setup(model)
    ewc.fishers = [{"nope": torch.ones(2)}]
    ewc.anchors = [{"nope": torch.zeros(2)}]
    assert ewc.penalty() is None


def test_online_mode_with_a_reshaped_parameter_starts_its_fisher_fresh():
    model = Net()
    ewc = EWC(mode="online", gamma=0.5)
    ewc.setup(model)
    d = data()
    ewc.on_experience_end(experience(0, d), model)
    old = {k: v.clone() for k, v in ewc.fishers[0].items()}
    model.fc2 = nn.Linear(6, 5)
    ewc.setup(model)
    f_new = diagonal_fisher(model, d, "empirical", batch_size=32)
    ewc.on_experience_end(experience(1, d), model)
    torch.testing.assert_close(ewc.fishers[0]["fc2.weight"], f_new["fc2.weight"])
    torch.testing.assert_close(ewc.fishers[0]["fc1.weight"], f_new["fc1.weight"] + 0.5 * old["fc1.weight"])


def test_state_dict_round_trip():
    model, d = Net(), data()
    ewc = EWC(ewc_lambda=4.0, fisher="per_sample")
    ewc.setup(model)
    ewc.on_experience_end(experience(0, d), model)
    perturb(model)
    ewc.on_experience_end(experience(1, data(seed=3)), model)
    perturb(model, seed=9)
    buf = io.BytesIO()
    torch.save(ewc.state_dict(), buf)
    buf.seek(0)
    restored = EWC(ewc_lambda=4.0, fisher="per_sample")
    restored.load_state_dict(torch.load(buf))
    restored.setup(model)
    assert len(restored.fishers) == 2
    assert restored.penalty().item() == pytest.approx(ewc.penalty().item(), rel=1e-6)


def test_loss_terms_name_the_penalty_ewc():
    model = Net()
    ewc = EWC()
    ewc.setup(model)
    assert ewc.loss_terms(None) == {}
    ewc.on_experience_end(experience(0, data()), model)
    perturb(model)
    terms = ewc.loss_terms(None)
    assert list(terms) == ["ewc"] and terms["ewc"].item() == pytest.approx(ewc.penalty().item())


# -- in a run ------------------------------------------------------------------------
def test_ewc_in_a_run_anchors_every_experience(tiny):
    built = build(compose(tiny + ["strategy=ewc"]))
    fit(built)
    ewc = built.module.strategies["ewc"]
    assert len(ewc.fishers) == 2  # the last experience's end also computes a Fisher
    assert all(sum(v.sum() for v in f.values()) > 0 for f in ewc.fishers)
    assert set(ewc.anchors[0]) == {n for n, _ in built.module.named_parameters()}
    assert "loss/ewc" not in built.module.loss_log[0] and built.module.loss_log[-1]["loss/ewc"] > 0


PERMUTED = ["experiment=permuted_digits", "scenario.n_experiences=2", "backbone.hidden=[64]",
            "train.epochs=3", "logger.progress=false"]


def _fisher_distance(module, fisher, anchor):
    return sum((fisher[n] * (p.detach() - anchor[n]) ** 2).sum().item() for n, p in module.named_parameters())


def test_ewc_keeps_weights_near_the_anchor_and_forgets_less_than_naive():
    ewc_run = build(compose(PERMUTED + ["strategy=ewc", "strategies.ewc.ewc_lambda=1000"]))
    fit(ewc_run)
    naive_run = build(compose(PERMUTED + ["strategy=naive"]))
    fit(naive_run)
    ewc = ewc_run.module.strategies["ewc"]
    f, anchor = ewc.fishers[0], ewc.anchors[0]
    R_ewc, R_naive = ewc_run.module.acc_matrix, naive_run.module.acc_matrix
    # identical until the first anchor
    assert R_ewc[0] == R_naive[0]
    d_ewc = _fisher_distance(ewc_run.module, f, anchor)
    d_naive = _fisher_distance(naive_run.module, f, anchor)
    assert d_ewc < 0.5 * d_naive
    forgetting_ewc, forgetting_naive = R_ewc[0][0] - R_ewc[1][0], R_naive[0][0] - R_naive[1][0]
    assert forgetting_ewc < forgetting_naive
