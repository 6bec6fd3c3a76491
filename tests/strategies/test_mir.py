"""MIR: the retrieval (top-k of the virtual step's loss increase), the batch it trains on, that it beats
naive, resume, refusals, and the cross-check against Avalanche's MIRPlugin."""

from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clframe.strategies._logit_buffer import draw
from clframe.strategies.mir import MIR
from strategy_helpers import Head, at, blob_benchmark, final_acc_by_strategy, interrupted_and_resumed, trained_with_twin
from torch import nn

from clframe.config import compose
from clframe.core.objectives import CLASSIFICATION, OBJECTIVES
from clframe.data.batch import Batch
from clframe.data.buffers import ReservoirBuffer
from clframe.errors import ConfigError
from clframe.evaluation.evaluate import evaluate_many
from clframe.models.model import Model
from clframe.run.runner import build, fit

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin, MIRPlugin

from clframe.scenarios.avalanche import from_avalanche  # noqa: E402


def tiny_module(lr: float = 0.5, seed: int = 0) -> SimpleNamespace:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 6))
    model = Model(net[:2], Head(net[2]))
    return SimpleNamespace(model=model, objective=CLASSIFICATION, optimizer=torch.optim.SGD(model.parameters(), lr=lr),
                           strategies={})


def filled(mem_size: int = 30, subsample: int = 30, batch_size_mem: int = 5) -> MIR:
    s = MIR(mem_size=mem_size, subsample=subsample, batch_size_mem=batch_size_mem)
    g = torch.Generator().manual_seed(1)
    s.buffer.add(torch.randn(mem_size, 4, generator=g), torch.randint(0, 6, (mem_size,), generator=g),
                 torch.zeros(mem_size, dtype=torch.long))
    return s


def incoming() -> Batch:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(8, 4, generator=g), torch.randint(4, 6, (8,), generator=g)  # classes 4 and 5 only
    return Batch(x, y, torch.zeros(8, dtype=torch.long), 1)


def loss_increase(module: SimpleNamespace, batch: Batch, xs: torch.Tensor, ys: torch.Tensor, lr: float) -> list[float]:
    """The paper's score, written independently: a copy of the model, one manual SGD step on the batch's mean
    cross-entropy, then each candidate's loss after minus before, one sample at a time."""
    virtual = copy.deepcopy(module.model)
    F.cross_entropy(virtual(batch.x, batch.t), batch.y).backward()
    with torch.no_grad():
        for p in virtual.parameters():
            p -= lr * p.grad
    scores = []
    with torch.no_grad():
        for x, y in zip(xs, ys):
            t = torch.zeros(1, dtype=torch.long)
            scores.append(F.cross_entropy(virtual(x[None], t), y[None]).item()
                          - F.cross_entropy(module.model(x[None], t), y[None]).item())
    return scores


def test_the_retrieval_picks_the_candidates_the_virtual_step_hurts_most():
    module, s, batch = tiny_module(lr=0.5), filled(), incoming()  # subsample = buffer size: every sample a candidate
    before = [p.detach().clone() for p in module.model.parameters()]
    chosen = s.retrieve(batch, module)
    scores = loss_increase(module, batch, s.buffer.x[:30], s.buffer.y[:30], lr=0.5)
    assert sorted(chosen.tolist()) == sorted(np.argsort(scores)[-5:].tolist())
    # the virtual step leaves the weights, their gradients and the optimizer alone
    assert all(torch.equal(a, p) and p.grad is None for a, p in zip(before, module.model.parameters()))
    assert not module.optimizer.state
    assert min(scores[i] for i in chosen.tolist()) > 0  # the classes the batch does not hold lose


def test_the_candidates_are_a_draw_of_subsample_from_the_buffer():
    module, s, batch = tiny_module(lr=0.5), filled(subsample=12, batch_size_mem=4), incoming()
    replica = torch.Generator().manual_seed(0)
    replica.set_state(s.buffer.gen.get_state())
    cand = torch.randperm(30, generator=replica)[:12]  # draw()'s candidates, from the same generator state
    chosen = s.retrieve(batch, module)
    scores = loss_increase(module, batch, s.buffer.x[cand], s.buffer.y[cand], lr=0.5)
    assert sorted(chosen.tolist()) == sorted(cand[np.argsort(scores)[-4:]].tolist())


def test_the_chosen_samples_join_the_batch_with_their_own_mean_loss():
    module, s, batch = tiny_module(), filled(subsample=20, batch_size_mem=6), incoming()
    out = s.before_forward(batch, module)
    assert len(out) == 14 and out.n_new == 8 and torch.equal(out.x[:8], batch.x)
    assert torch.allclose(out.weight, torch.tensor([1 / 8] * 8 + [1 / 6] * 6))  # CE(B) + CE(chosen)
    stored = {tuple(r) for r in s.buffer.x[:30].tolist()}
    assert len({tuple(r) for r in out.x[8:].tolist()} & stored) == 6
    assert len(s.before_forward(batch, module)) == 14
    # a buffer smaller than batch_size_mem replays all it holds; an empty one nothing
    small = MIR(mem_size=3)
    assert s.before_forward(batch, module) is not batch and small.before_forward(batch, module) is batch
    small.buffer.add(batch.x[:3], batch.y[:3], batch.t[:3])
    assert len(small.before_forward(batch, module)) == 11


def test_the_buffer_takes_the_incoming_samples_by_reservoir():
    module, s, batch = tiny_module(), MIR(mem_size=5, seed=3), incoming()
    out = s.before_forward(batch, module)
    s.after_optimizer_step(SimpleNamespace(batch=out))
    out = s.before_forward(batch, module)
    s.after_optimizer_step(SimpleNamespace(batch=out))  # only the 8 incoming samples are offered
    ref = ReservoirBuffer(5, seed=3)
    ref.add(batch.x, batch.y, batch.t)
    draw(ref, 50)  # the retrieval's draw
    ref.add(batch.x, batch.y, batch.t)
    assert s.buffer.seen == 16 and torch.equal(s.buffer.x, ref.x)


# -- refusals ----------------------------------------------------------------------------
def test_regression_is_refused():
    with pytest.raises(ConfigError, match=r"strategy 'mir' is defined for classification .* Use strategy=replay"):
        MIR().setup(SimpleNamespace(objective=OBJECTIVES["regression"], optimizer=None, strategies={}))
    built = build(compose(["experiment=slowly_changing_regression", "strategy=mir", "logger.progress=false"]))
    with pytest.raises(ConfigError, match=r"strategy 'mir' is defined for classification"):
        fit(built)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mem_size": 0}, r"^'mem_size' must be >= 1, got 0: the buffer needs room .* Set it to"),
    ({"batch_size_mem": 0}, r"^'batch_size_mem' must be >= 1, got 0: .* strategy=naive"),
    ({"subsample": 5}, r"^'subsample' must be >= batch_size_mem \(10\), got 5: .* Raise subsample"),
    ({"subsample": 20, "batch_size_mem": 30}, r"^'subsample' must be >= batch_size_mem \(30\), got 20"),
])
def test_settings_that_cannot_work_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MIR(**kwargs)


def test_a_bad_setting_names_its_config_key():
    with pytest.raises(ConfigError, match=r"'strategies.mir.subsample' must be >= batch_size_mem"):
        build(compose(["strategy=mir", "strategies.mir.subsample=3", "logger.progress=false"]))


def test_another_replay_method_is_refused(tiny):
    built = build(compose(tiny + ["strategy=[replay,mir]"]))
    with pytest.raises(ConfigError, match=r"strategy 'mir' replays samples from its own buffer and cannot be "
                                          r"combined with 'replay'"):
        fit(built)


# -- in a run ------------------------------------------------------------------------------
ONLINE = ["experiment=split_digits", "train.epochs=1", "train.batch_size=10", "train.lr=0.1", "logger.progress=false"]


def test_mir_beats_naive_on_class_incremental_split_digits():
    # one pass, batches of 10, the paper's lr 0.1 (137 steps); final average accuracy, seeds 0, 1, 2:
    # naive 0.193, 0.177, 0.139; mir 0.881, 0.743, 0.825 (random replay of 10: 0.705, 0.672, 0.716).
    # At lr 0.05 MIR is far noisier (0.392, 0.730, 0.222).
    acc = final_acc_by_strategy(ONLINE, {"naive": [], "mir": []})
    assert acc["naive"] < 0.3
    assert acc["mir"] > acc["naive"] + 0.4, acc


def test_a_boundary_free_stream_trains_the_same(tiny):
    """Task-free: no experience event is used, so hiding the boundaries changes nothing."""
    weights = []
    for boundary_free in (False, True):
        built = build(compose(tiny + ["strategy=mir"]))
        built.scenario.stream.boundary_free = boundary_free
        fit(built)
        assert built.module.strategies["mir"].buffer.seen == built.module.samples_seen  # the incoming samples only
        weights.append([p.detach() for p in built.module.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


RESUME = ["scenario.n_experiences=3", "backbone.hidden=[32]", "train.epochs=1", "logger.progress=false",
          "strategy=mir", "strategies.mir.mem_size=50", "backbone.dropout=0.1", "train.momentum=0.9",
          "checkpoint.every=7", "checkpoint.keep=1000"]


@pytest.mark.parametrize("where", ["boundary", "mid_exp1"])
def test_resume_is_bit_identical(tmp_path, where):
    a, b = interrupted_and_resumed(RESUME, tmp_path, at(where))
    buf_a, buf_b = a["strategies"]["mir"]["buffer"], b["strategies"]["mir"]["buffer"]
    assert buf_a["seen"] == buf_b["seen"]
    for key in ("x", "y", "t", "rng"):
        assert torch.equal(buf_a[key], buf_b[key]), key


# -- cross-check against Avalanche 0.6 --------------------------------------------------------
class PaperMIRPlugin(MIRPlugin):
    """Avalanche's MIRPlugin (its virtual step, scoring, top-k and summed replay loss, unchanged) fed the
    paper's candidates: ``subsample`` drawn without replacement from a reservoir of what was trained on,
    filled after every step, from the second step on. Avalanche's own buffer is class-balanced, filled
    with a whole experience at its end, and draws from the second experience on, leaving out the classes
    of the last batch (see MIR's docstring). The reservoir and the draws are clframe's, with the same
    seed as clframe's run, so both sides see the same candidates and a gap is the MIR step itself."""

    def __init__(self, seed: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.paper_buffer = ReservoirBuffer(self.mem_size, seed)

    def before_backward(self, strategy, **kwargs):
        b = self.paper_buffer
        if b.size:
            idx = draw(b, self.subsample)
            self.replay_loader = iter([(b.x[idx], b.y[idx], b.t[idx])])
        super().before_backward(strategy, **kwargs)

    def after_update(self, strategy, **kwargs):
        self.paper_buffer.add(strategy.mb_x, strategy.mb_y, strategy.mb_task_id)

    def after_training_exp(self, strategy, **kwargs):
        pass


def final_accuracies(seed: int, epochs: int = 1, lr: float = 0.1, batch_size: int = 10, mem_size: int = 200,
                     subsample: int = 50, batch_size_mem: int = 10) -> tuple[float, float, float]:
    """Final average accuracy of clframe's MIR and Avalanche's (``PaperMIRPlugin`` on ``Naive``) on
    ``blob_benchmark(seed)``: same MLP and initial weights, SGD, epochs, batch size, memory, subsample and
    replay size, and the same batches in the same order (no shuffling); and the largest difference
    between the two final weights."""
    bench = blob_benchmark(seed)
    scenario = from_avalanche(bench)
    mir = MIR(mem_size=mem_size, subsample=subsample, batch_size_mem=batch_size_mem, seed=seed)
    module, theirs_model = trained_with_twin(scenario, {"mir": mir}, seed, batch_size, epochs, lr)
    ours = float(np.mean(module.acc_matrix[-1]))

    torch.manual_seed(seed)
    plugin = PaperMIRPlugin(seed, batch_size_mem=batch_size_mem, mem_size=mem_size, subsample=subsample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = Naive(theirs_model, torch.optim.SGD(theirs_model.parameters(), lr=lr), nn.CrossEntropyLoss(),
                       train_mb_size=batch_size, train_epochs=epochs, eval_mb_size=256, device="cpu",
                       evaluator=EvaluationPlugin(loggers=[]), plugins=[plugin])
        for exp in bench.train_stream:
            theirs.train(exp, shuffle=False)
    theirs_model.eval()
    accs = evaluate_many(lambda x, t: theirs_model(x), [e.eval for e in scenario.stream], 256)[0]
    gap = max((a - b).abs().max().item() for a, b in zip(module.parameters(), theirs_model.parameters()))
    return ours, float(np.mean(accs)), gap


# Both sides draw the same candidates (PaperMIRPlugin), so they take the same steps up to float rounding.
# Measured (final average accuracy ours / Avalanche's, largest final weight difference), mem 200, subsample 50,
# 10 replayed, batches of 10, lr 0.1:
#   1 epoch:  seed 0 0.9467 / 0.9467, 1.5e-7; seed 1 0.9600 / 0.9600, 1.8e-7; seed 2 0.9833 / 0.9833, 2.1e-7
#   3 epochs: seed 0 0.9633 / 0.9633, 9.5e-7; seed 1 0.9700 / 0.9700, 4.2e-7; seed 2 0.9900 / 0.9900, 2.4e-7
# On these blobs accuracy alone barely tells MIR from random retrieval (ours with the first batch_size_mem
# candidates in place of the top-k, 1 epoch: 0.9067, 0.9567, 0.9900; weights 0.07 to 0.15 away from
# Avalanche's), so the checks also compare the final weights.
# Avalanche's MIRPlugin as shipped runs on torch 2.14 (deprecation warnings only) but departs from the paper
# (its buffer, schedule and candidates): 0.650, 0.683, 0.923 for seeds 0-2, 1 epoch, same settings.
def test_final_accuracy_agrees_with_avalanche_on_gaussian_blobs():
    ours, theirs, gap = final_accuracies(0)
    assert ours > 0.9 and abs(ours - theirs) < 0.03 and gap < 1e-4, (ours, theirs, gap)


@pytest.mark.slow
def test_final_accuracy_agrees_with_avalanche_over_three_seeds():
    runs = np.array([final_accuracies(seed, epochs=3) for seed in range(3)])
    assert (abs(runs[:, 0] - runs[:, 1]) < 0.03).all() and (runs[:, 2] < 1e-4).all(), runs
