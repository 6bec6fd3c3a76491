"""Cross-check: clframe's accuracy matrix and forgetting agree with Avalanche's metrics when
the same model evaluates the same data (Avalanche trains; both evaluate after each experience)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from clframe.evaluation.evaluate import evaluate_many
from clframe.evaluation.metrics import average_forgetting, backward_transfer

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from avalanche.benchmarks import nc_benchmark
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as make
    from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

from clframe.scenarios.avalanche import from_avalanche


def test_accuracy_matrix_and_forgetting_match_avalanche():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(6, 10, generator=g) * 2.0
    y = torch.arange(900) % 6
    x = centers[y] + torch.randn(900, 10, generator=g)
    bench = nc_benchmark(make(x[:600], y[:600]), make(x[600:], y[600:]), n_experiences=3, task_labels=False,
                         fixed_class_order=list(range(6)))
    scenario = from_avalanche(bench)  # clframe's view of the same test data
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 6))
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), forgetting_metrics(experience=True, stream=True),
                                 loggers=[])
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05), train_mb_size=32,
                     train_epochs=2, eval_mb_size=64, evaluator=evaluator, device="cpu")
    ours, theirs = [], []
    for exp in bench.train_stream:
        strategy.train(exp)
        res = strategy.eval(bench.test_stream)
        theirs.append([res[f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"] for j in range(3)])
        model.eval()
        ours.append(evaluate_many(lambda xb, tb: model(xb), [e.eval for e in scenario.stream], batch_size=50)[0])
    R, A = np.array(ours), np.array(theirs)
    assert np.allclose(R, A, atol=1e-6)
    # Avalanche's forgetting is accuracy just after training an experience minus the final one,
    # averaged over past experiences: that is -BWT
    assert res["StreamForgetting/eval_phase/test_stream"] == pytest.approx(-backward_transfer(R), abs=1e-6)
    for j in range(2):
        key = f"ExperienceForgetting/eval_phase/test_stream/Task000/Exp{j:03d}"
        assert res[key] == pytest.approx(R[j, j] - R[-1, j], abs=1e-6)
    # clframe's average forgetting takes the best earlier accuracy (Chaudhry et al.), so it is
    # never below Avalanche's and equal when an experience was best right after its training
    assert average_forgetting(R) >= res["StreamForgetting/eval_phase/test_stream"] - 1e-6
    if all(R[j, j] >= R[j:2, j].max() for j in range(2)):
        assert average_forgetting(R) == pytest.approx(res["StreamForgetting/eval_phase/test_stream"], abs=1e-6)
