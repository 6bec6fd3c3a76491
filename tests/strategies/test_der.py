"""DER and DER++: the logit buffer, the batch they train on, their loss terms, that they beat naive,
resume, refusals, and the cross-check against Avalanche's DER."""

from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clframe.strategies._logit_buffer import LogitReservoir, draw
from clframe.strategies.der import DER
from clframe.strategies.derpp import DERpp
from strategy_helpers import (
    Head,
    PaperBuffer,
    blob_benchmark,
    final_acc_by_strategy,
    inside_second_of_three,
    interrupted_and_resumed,
    split_digits_benchmark,
)
from torch import nn

from clframe.config import compose
from clframe.config.registry import STRATEGIES
from clframe.core.module import CLModule
from clframe.core.objectives import CLASSIFICATION
from clframe.core.strategy import StepContext
from clframe.data.batch import Batch
from clframe.data.buffers import ReservoirBuffer
from clframe.data.iterator import StreamIterator
from clframe.errors import ConfigError
from clframe.evaluation.evaluate import evaluate_many
from clframe.evaluation.metrics import summary_metrics
from clframe.models.model import Model
from clframe.run.engines import fit_loop
from clframe.run.runner import build, fit


def batch_of(ids: list[int], exp: int = 0) -> Batch:
    ids_t = torch.tensor(ids)
    return Batch(ids_t.float().view(-1, 1).expand(-1, 4).clone(), ids_t % 6, ids_t // 100, exp)


def ids_of(x: torch.Tensor) -> list[int]:
    return x[:, 0].long().tolist()


def logits_of(ids: torch.Tensor) -> torch.Tensor:
    """Fake logits that name their sample: row i is id_i * [1, 2, 3, 4, 5, 6]."""
    return ids.float().view(-1, 1) * torch.arange(1, 7).float()


def filled(strategy: DER, ids: range = range(100, 130)) -> DER:
    b = batch_of(list(ids))
    strategy.buffer.add(b.x, b.y, b.t, logits_of(torch.tensor(list(ids))))
    return strategy


# -- the buffer ----------------------------------------------------------------------
def test_logit_reservoir_keeps_what_the_reservoir_keeps_with_the_logits_of_each_sample():
    plain, logit = ReservoirBuffer(20, seed=3), LogitReservoir(20, seed=3)
    for start in range(0, 200, 16):
        b = batch_of(list(range(start, start + 16)))
        plain.add(b.x, b.y, b.t)
        logit.add(b.x, b.y, b.t, logits_of(torch.arange(start, start + 16)))
    assert logit.seen == plain.seen == 208 and logit.size == 20
    for a, b in zip(plain.contents(), logit.contents()):
        assert torch.equal(a, b)
    x = logit.contents()[0]
    assert torch.equal(logit.z[:20], logits_of(x[:, 0]))  # each row's logits travel with it
    assert len(set(ids_of(x))) == 20 and max(ids_of(x)) > 40  # later samples replaced early ones


def test_draws_are_without_replacement_and_at_most_the_buffer():
    r = filled(DER(mem_size=20), range(100, 130))
    idx = draw(r.buffer, 15)
    assert len(idx) == 15 and len(set(idx.tolist())) == 15
    assert sorted(draw(r.buffer, 50).tolist()) == list(range(20))


def test_a_batch_without_logits_is_refused():
    b = batch_of([1, 2])
    with pytest.raises(ValueError, match="needs the batch's outputs z"):
        LogitReservoir(5).add(b.x, b.y, b.t)


# -- the batch and the loss terms ----------------------------------------------------
def test_empty_buffer_leaves_the_batch_alone():
    b = batch_of([1, 2, 3])
    assert DER().before_forward(b, None) is b and DERpp().before_forward(b, None) is b
    assert DER().loss_terms(StepContext(None, b, torch.zeros(3, 6), torch.zeros(()), 0, 0)) == {}


@pytest.mark.parametrize(("cls", "draws"), [(DER, 1), (DERpp, 2)])
def test_drawn_samples_join_the_batch_with_zero_weight(cls, draws):
    s = filled(cls(batch_size_mem=None))
    out = s.before_forward(batch_of([1, 2, 3, 4, 5], exp=2), None)
    # as many drawn per draw as the incoming batch has (Mammoth's minibatch_size = batch_size)
    assert len(out) == 5 + 5 * draws and out.n_new == 5 and out.exp == 2
    assert ids_of(out.x[:5]) == [1, 2, 3, 4, 5]
    assert set(ids_of(out.x[5:])) <= set(range(100, 130))
    assert out.y.tolist() == [i % 6 for i in ids_of(out.x)] and out.t.tolist() == [i // 100 for i in ids_of(out.x)]
    # the task loss stays the incoming batch's mean cross-entropy
    assert torch.allclose(out.weight, torch.tensor([0.2] * 5 + [0.0] * 5 * draws))
    assert torch.equal(s._z, logits_of(out.x[5:10, 0]))  # the first draw's stored logits


def test_der_term_is_zero_at_the_stored_logits_and_grows_with_drift():
    torch.manual_seed(0)
    net = nn.Linear(4, 6)
    s = DER(alpha=0.3, batch_size_mem=8)
    xs = torch.randn(30, 4)
    with torch.no_grad():
        s.buffer.add(xs, torch.arange(30) % 6, torch.zeros(30, dtype=torch.long), net(xs))
    batch = s.before_forward(Batch(torch.randn(4, 4), torch.zeros(4, dtype=torch.long),
                                   torch.zeros(4, dtype=torch.long), 0), None)

    def term(scale: float) -> float:
        with torch.no_grad():
            drifted = copy.deepcopy(net)
            drifted.weight.add_(scale)
            logits = drifted(batch.x)
        ctx = StepContext(SimpleNamespace(objective=CLASSIFICATION), batch, logits, torch.zeros(()), 0, 0)
        terms = s.loss_terms(ctx)
        assert set(terms) == {"der_mse"}
        expected = 0.3 * F.mse_loss(logits[4:12], net(batch.x[4:12]))
        assert terms["der_mse"].item() == pytest.approx(expected.item(), abs=1e-6)
        return terms["der_mse"].item()

    assert term(0.0) == pytest.approx(0.0, abs=1e-10)
    assert 0 < term(0.1) < term(0.5) < term(1.0)


def test_derpp_adds_beta_cross_entropy_on_a_second_independent_draw():
    s = filled(DERpp(alpha=0.5, beta=0.7, batch_size_mem=10, seed=1))
    batch = s.before_forward(batch_of([1, 2, 3]), None)
    first, second = ids_of(batch.x[3:13]), ids_of(batch.x[13:23])
    assert len(set(first)) == len(set(second)) == 10 and first != second  # two draws, each without replacement
    torch.manual_seed(0)
    logits = torch.randn(23, 6)
    ctx = StepContext(SimpleNamespace(objective=CLASSIFICATION), batch, logits, torch.zeros(()), 0, 0)
    terms = s.loss_terms(ctx)
    assert terms["der_mse"].item() == pytest.approx(0.5 * F.mse_loss(logits[3:13], s._z).item(), rel=1e-6)
    assert terms["der_ce"].item() == pytest.approx(
        0.7 * F.cross_entropy(logits[13:], batch.y[13:]).item(), rel=1e-6)


def test_the_buffer_takes_the_incoming_samples_with_the_logits_of_their_step():
    s = filled(DER(mem_size=100), range(100, 110))
    batch = s.before_forward(batch_of([1, 2, 3]), None)
    logits = torch.randn(len(batch), 6)
    s.after_optimizer_step(StepContext(None, batch, logits, torch.zeros(()), 0, 0))
    assert s.buffer.seen == 13  # only the 3 incoming samples were offered
    x = s.buffer.contents()[0]
    assert ids_of(x[10:13]) == [1, 2, 3] and torch.equal(s.buffer.z[10:13], logits[:3])


# -- in a run ------------------------------------------------------------------------
SPLIT5 = ["scenario.n_experiences=5", "backbone.hidden=[64]", "train.epochs=3", "train.lr=0.1", "logger.progress=false"]


def test_der_and_derpp_beat_naive_on_class_incremental_split_digits():
    acc = final_acc_by_strategy(SPLIT5, {"naive": [], "der": ["strategies.der.alpha=1.0"], "derpp": []})
    assert acc["naive"] < 0.3  # naive knows only the last two classes
    assert acc["der"] > acc["naive"] + 0.15
    assert acc["derpp"] > acc["naive"] + 0.4 and acc["derpp"] > acc["der"]


RESUME = ["scenario.n_experiences=3", "backbone.hidden=[32]", "train.epochs=1", "logger.progress=false",
          "strategy=derpp", "strategies.derpp.mem_size=50", "backbone.dropout=0.1", "train.momentum=0.9",
          "checkpoint.every=7", "checkpoint.keep=1000"]


def test_resume_is_bit_identical(tmp_path):
    a, b = interrupted_and_resumed(RESUME, tmp_path, inside_second_of_three)
    buf_a, buf_b = a["strategies"]["derpp"]["buffer"], b["strategies"]["derpp"]["buffer"]
    for key in ("x", "y", "t", "z", "rng"):
        assert torch.equal(buf_a[key], buf_b[key]), key
    assert buf_a["seen"] == buf_b["seen"]


# -- refusals ------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mem_size": 0}, r"^'mem_size' must be >= 1, got 0: the buffer needs room"),
    ({"batch_size_mem": 0}, r"^'batch_size_mem' must be >= 1 or null, got 0"),
])
@pytest.mark.parametrize("cls", [DER, DERpp])
def test_settings_that_cannot_work_are_refused(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


def test_negative_weights_are_refused_from_a_config():
    with pytest.raises(ConfigError, match=r"^'strategies\.der\.alpha' must be >= 0, got -1"):
        STRATEGIES.build("der", {"alpha": -1.0})
    with pytest.raises(ConfigError, match=r"^'strategies\.derpp\.beta' must be >= 0, got -0\.5"):
        STRATEGIES.build("derpp", {"beta": -0.5})


@pytest.mark.parametrize("combo", ["[replay,derpp]", "[der,replay]", "[der,derpp]"])
def test_two_replay_methods_are_refused(tiny, combo):
    built = build(compose(tiny + [f"strategy={combo}"]))
    with pytest.raises(ConfigError, match=r"strategy '(der|derpp)' replays samples from its own buffer and cannot "
                                          r"be combined with '(replay|der|derpp)'"):
        fit(built)


@pytest.mark.parametrize("strategy", ["der", "derpp"])
def test_a_hypernetwork_over_several_tasks_is_refused(tiny, strategy):
    built = build(compose(tiny + [f"strategy={strategy}", "hypernet=hnet_mlp", "scenario.task_incremental=true"]))
    with pytest.raises(ConfigError, match=rf"strategy '{strategy}' replays samples of every task in one batch, but "
                                          r"this run's model is a hypernetwork"):
        fit(built)


def test_derpp_trains_on_a_regression_objective(tiny):
    """The stored outputs are the regressor's; the label term is the squared error."""
    built = build(compose(["scenario=toy_regression", "backbone.hidden=[32]", "train.lr=0.01", "logger.progress=false",
                           "strategy=derpp"]))
    fit(built)
    last = built.module.loss_log[-1]
    assert last["loss/der_mse"] > 0 and last["loss/der_ce"] > 0
    assert np.isfinite(summary_metrics(built.module.acc_matrix)["final_avg_acc"])


def test_it_combines_with_a_penalty(tiny):
    built = build(compose(tiny + ["strategy=[derpp,ewc]", "strategies.ewc.ewc_lambda=1.0"]))
    fit(built)
    assert {"loss/der_mse", "loss/der_ce", "loss/ewc"} <= set(built.module.loss_log[-1])


# -- cross-check against Avalanche 0.6 -------------------------------------------------
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.training import DER as AvalancheDER
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.templates import SupervisedTemplate

from clframe.scenarios.avalanche import from_avalanche  # noqa: E402


class PaperDER(AvalancheDER):
    """Avalanche's DER with the paper's step (Mammoth's ``observe``) in place of Avalanche's departures:
    a reservoir buffer of each step's logits (not a class-balanced one filled at experience end with
    the trained model's logits), replay from the first step, two independent draws for DER++."""

    def __init__(self, *, seed: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.paper_buffer = PaperBuffer(self.mem_size, seed)

    def _before_training_exp(self, **kwargs):
        SupervisedTemplate._before_training_exp(self, **kwargs)

    def _after_training_exp(self, **kwargs):
        SupervisedTemplate._after_training_exp(self, **kwargs)

    def training_epoch(self, **kwargs):
        for self.mbatch in self.dataloader:  # noqa: B020 (Avalanche keeps the batch on the strategy)
            self._unpack_minibatch()
            self.optimizer.zero_grad()
            out = self.model(self.mb_x)
            loss = F.cross_entropy(out, self.mb_y)
            if self.paper_buffer.seen:
                bx, _, bz = self.paper_buffer.get(self.batch_size_mem)
                loss = loss + self.alpha * F.mse_loss(self.model(bx), bz)
                if self.beta:
                    bx, by, _ = self.paper_buffer.get(self.batch_size_mem)
                    loss = loss + self.beta * F.cross_entropy(self.model(bx), by)
            loss.backward()
            self.optimizer.step()
            self.paper_buffer.add(self.mb_x, self.mb_y, out.detach())


def final_accuracies(bench, kind: str, seed: int, epochs: int = 1, lr: float = 0.03, alpha: float = 0.2,
                     beta: float = 1.0, batch_size: int = 10, mem_size: int = 200) -> tuple[float, float]:
    """Final average accuracy of clframe's and Avalanche's ``kind`` (``der``/``derpp``; ``paper``
    prefix: Avalanche's loop with the paper's step) on ``bench``: same MLP and initial weights, SGD,
    epochs, batch size, buffer and draw size, and the same batches in the same order (no shuffling)."""
    scenario = from_avalanche(bench)
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Linear(scenario.input_shape[0], 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
    fc = nn.Linear(64, scenario.n_classes)
    theirs_model = nn.Sequential(copy.deepcopy(backbone), copy.deepcopy(fc))
    name = kind.removeprefix("paper_")
    strategy = DER(alpha=alpha, mem_size=mem_size, seed=seed) if name == "der" else \
        DERpp(alpha=alpha, beta=beta, mem_size=mem_size, seed=seed)
    loader = StreamIterator(scenario.stream, batch_size, epochs, seed=seed, shuffle=False)
    module = CLModule(Model(backbone, Head(fc)), {name: strategy}, scenario.stream, loader.steps_per_experience(),
                      lr=lr)
    fit_loop(module, loader, "cpu", progress=False)
    ours = float(np.mean(module.acc_matrix[-1]))

    torch.manual_seed(seed)
    cls = PaperDER if kind.startswith("paper_") else AvalancheDER
    extra = {"seed": seed} if kind.startswith("paper_") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = cls(model=theirs_model, optimizer=torch.optim.SGD(theirs_model.parameters(), lr=lr),
                     mem_size=mem_size, alpha=alpha, beta=beta if name == "derpp" else 0.0, train_mb_size=batch_size,
                     train_epochs=epochs, eval_mb_size=256, evaluator=EvaluationPlugin(loggers=[]), device="cpu",
                     **extra)
        for exp in bench.train_stream:
            theirs.train(exp, shuffle=False)
    theirs_model.eval()
    accs = evaluate_many(lambda x, t: theirs_model(x), [e.eval for e in scenario.stream], 256)[0]
    return ours, float(np.mean(accs))


# Avalanche's DER as shipped departs from the paper (see DER's docstring): it matches the logits of the
# model trained on the whole experience, keeps a class-balanced memory and replays from the second
# experience, and its final accuracy differs from the paper's method by up to 0.2 either way on these
# streams (blobs, 1 epoch: 0.67 against 0.84 with alpha 1.0, 0.67 against 0.58 with alpha 0.2; split
# digits shuffled, 3 epochs, alpha 0.2: 0.42 against 0.20). The cross-check therefore runs Avalanche's
# loop with the paper's step (PaperDER). On blobs at 3 epochs one seed's gap has an sd of about 0.02
# from the buffer's draws alone (20 seeds: mean gap -0.001 +- 0.004 for DER), so the fast check
# averages 5 seeds.
@pytest.mark.parametrize("kind", ["paper_der", "paper_derpp"])
def test_final_accuracy_agrees_with_avalanche_on_gaussian_blobs(kind):
    pairs = np.array([final_accuracies(blob_benchmark(seed, n=1800, n_train=1200), kind, seed, epochs=3)
                      for seed in range(5)])
    ours, theirs = pairs.mean(0)
    assert ours > 0.85 and abs(ours - theirs) < 0.03, pairs


# On split digits DER with alpha 0.2 stays near naive in both (0.14 and 0.15), which would make the
# agreement say little; its check uses alpha 1.0 (Mammoth's best for perm-mnist with a buffer of 200).
@pytest.mark.slow
@pytest.mark.parametrize(("kind", "alpha"), [("paper_der", 1.0), ("paper_derpp", 0.2)])
def test_final_accuracy_agrees_with_avalanche_on_split_digits(kind, alpha):
    pairs = np.array([final_accuracies(split_digits_benchmark(), kind, seed, epochs=3, lr=0.05, alpha=alpha)
                      for seed in range(3)])
    ours, theirs = pairs.mean(0)
    assert abs(ours - theirs) < 0.03, pairs
