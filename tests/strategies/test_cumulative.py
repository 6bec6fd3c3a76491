"""Cumulative: refuses a stream that is not cumulative, is naive on one that is, and matches Avalanche."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from clframe.scenarios._common import make_cumulative
from clframe.strategies.cumulative import Cumulative
from torch import nn

from clframe.config import compose
from clframe.core.module import CLModule
from clframe.data.iterator import StreamIterator
from clframe.errors import ConfigError
from clframe.evaluation.evaluate import evaluate_many
from clframe.evaluation.metrics import summary_metrics
from clframe.models.model import Model
from clframe.run.engines import fit_loop
from clframe.run.runner import build, fit

SPLIT5 = ["scenario.n_experiences=5", "backbone.hidden=[64]", "train.epochs=3", "train.lr=0.1",
          "logger.progress=false"]


class Head(nn.Module):
    """A linear layer as a clframe head (task labels unused)."""

    def __init__(self, fc: nn.Module) -> None:
        super().__init__()
        self.fc = fc

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.fc(h)


def test_a_stream_that_is_not_cumulative_is_refused_naming_the_scenario_setting(tiny):
    built = build(compose(tiny + ["strategy=cumulative"]))
    with pytest.raises(ConfigError, match=r"experiences \[1\] hold only their own training data.*"
                                          r"scenario\.cumulative=true"):
        fit(built)


def test_a_single_experience_is_its_own_union(tiny):
    built = build(compose(tiny + ["strategy=cumulative", "scenario.n_experiences=1"]))
    fit(built)
    assert len(built.module.acc_matrix) == 1


def test_on_a_cumulative_stream_each_experience_takes_the_steps_of_the_union_and_trains_as_naive():
    runs = {}
    for strategy in ("naive", "cumulative"):
        built = build(compose(SPLIT5 + ["scenario.cumulative=true", f"strategy={strategy}"]))
        fit(built)
        runs[strategy] = built
    stream = runs["cumulative"].scenario.stream
    plain = build(compose(SPLIT5)).scenario.stream
    union = [sum(len(e.train) for e in plain[: i + 1]) for i in range(5)]
    assert [len(e.train) for e in stream] == union
    assert runs["cumulative"].module.steps_per_experience == [3 * math.ceil(n / 32) for n in union]
    # the evaluation data stays per experience
    assert [len(e.eval) for e in stream] == [len(e.eval) for e in plain]
    # nothing but the stream differs from naive: the same run, bit for bit
    assert runs["cumulative"].module.acc_matrix == runs["naive"].module.acc_matrix
    final = summary_metrics(runs["cumulative"].module.acc_matrix)["final_avg_acc"]
    assert final > 0.85  # class-incremental split digits: naive on the plain stream stays near 0.2


# -- Avalanche's Cumulative on the same stream ---------------------------------------------------

def crosscheck(x_tr, y_tr, x_te, y_te, n_exp: int, hidden: int, epochs: int, bs: int, lr: float,
               seed: int) -> tuple[float, float]:
    """Final average accuracy of clframe's Cumulative (on the cumulative view of the stream) and Avalanche's,
    trained from the same initial weights; both evaluated by clframe's evaluator."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from avalanche.benchmarks import nc_benchmark
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as make
        from avalanche.training import Cumulative as AvalancheCumulative
        from avalanche.training.plugins import EvaluationPlugin
    from clframe.scenarios.avalanche import from_avalanche

    n_classes = int(y_tr.max()) + 1
    bench = nc_benchmark(make(x_tr, y_tr), make(x_te, y_te), n_experiences=n_exp, task_labels=False,
                         fixed_class_order=list(range(n_classes)))
    scenario = make_cumulative(from_avalanche(bench))
    torch.manual_seed(seed)
    dim = x_tr[0].numel()
    net = nn.Sequential(nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
    twin = nn.Sequential(nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
    twin.load_state_dict(net.state_dict())

    loader = StreamIterator(scenario.stream, bs, epochs, seed=seed)
    module = CLModule(Model(net[:3], Head(net[3])), {"cumulative": Cumulative()}, scenario.stream,
                      loader.steps_per_experience(), lr=lr)
    fit_loop(module, loader, "cpu", progress=False)
    ours = sum(module.acc_matrix[-1]) / n_exp

    torch.manual_seed(seed)
    strategy = AvalancheCumulative(twin, torch.optim.SGD(twin.parameters(), lr=lr), nn.CrossEntropyLoss(),
                                   train_mb_size=bs, train_epochs=epochs, eval_mb_size=256, device="cpu",
                                   evaluator=EvaluationPlugin(loggers=[]))
    for exp in bench.train_stream:
        strategy.train(exp)
    twin.eval()
    theirs = sum(evaluate_many(lambda xb, tb: twin(xb), [e.eval for e in scenario.stream], batch_size=256)[0]) / n_exp
    return ours, theirs


def test_final_accuracy_agrees_with_avalanche_on_gaussian_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 10, generator=g) * 2.0
    y = torch.arange(1800) % 6
    x = centres[y] + torch.randn(1800, 10, generator=g) * 1.5
    ours, theirs = crosscheck(x[:1200], y[:1200], x[1200:], y[1200:], n_exp=3, hidden=32, epochs=2, bs=32,
                              lr=0.05, seed=0)
    assert ours > 0.8
    assert ours == pytest.approx(theirs, abs=0.03)


@pytest.mark.slow
def test_final_accuracy_agrees_with_avalanche_on_split_digits_over_three_seeds():
    from clframe.data.datasets import load_dataset

    ds = load_dataset("digits", None, False)
    pairs = [crosscheck(ds.x_train, ds.y_train, ds.x_test, ds.y_test, n_exp=5, hidden=100, epochs=3, bs=32, lr=0.1,
                        seed=seed) for seed in range(3)]
    ours, theirs = (sum(p[i] for p in pairs) / len(pairs) for i in (0, 1))
    assert ours == pytest.approx(theirs, abs=0.03), pairs
