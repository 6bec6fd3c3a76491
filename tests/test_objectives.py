"""Objectives: the loss and the higher-is-better score of classification and regression."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clframe.core.objectives import IGNORE, get_objective
from clframe.data.stream import TensorData
from clframe.errors import ConfigError
from clframe.evaluation.evaluate import evaluate_many


def test_classification_is_cross_entropy_and_accuracy():
    obj = get_objective("classification")
    logits, y = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]), torch.tensor([0, 0, 0])
    assert obj.loss(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item())
    assert obj.score(logits, y).tolist() == [1.0, 0.0, 1.0]
    assert obj.online(2.0) == 2.0 and obj.online_key == "online_acc"


@pytest.mark.parametrize("shape", [(4,), (4, 1)])
def test_regression_is_squared_error_and_its_negative(shape):
    obj = get_objective("regression")
    out, y = torch.tensor([[1.0], [2.0], [0.0], [-1.0]]), torch.tensor([0.0, 2.0, 1.0, 1.0]).reshape(shape)
    err = torch.tensor([1.0, 0.0, 1.0, 4.0])
    assert torch.equal(obj.loss(out, y, reduction="none"), err)
    assert obj.loss(out, y).item() == pytest.approx(1.5) and obj.loss(out, y, reduction="sum").item() == 6.0
    assert torch.equal(obj.score(out, y), -err)
    assert obj.online(-6.0) == 6.0 and obj.online_key == "online_error"


def test_multi_output_regression_averages_over_outputs():
    obj = get_objective("regression")
    out, y = torch.zeros(2, 3), torch.tensor([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])
    assert obj.loss(out, y, reduction="none").tolist() == [1.0, 3.0]


def test_evaluation_uses_the_objective():
    model = lambda x, t: x[:, :1]  # noqa: E731
    data = TensorData(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0]), torch.zeros(2, dtype=torch.long))
    score, loss = evaluate_many(model, [data], objective=get_objective("regression"))
    assert score == [pytest.approx(-2.5)] and loss == [pytest.approx(2.5)]


def test_unknown_objective_names_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown objective 'ranking'; valid objectives: classification, regression"):
        get_objective("ranking")


def sequence_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [B=3, S=4, C=3] and labels [B, S] with unlabelled (IGNORE) entries."""
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 3)
    y = torch.tensor([[0, 1, IGNORE, IGNORE], [2, 2, 2, 0], [IGNORE, 1, IGNORE, IGNORE]])
    return logits, y


def test_per_step_loss_averages_cross_entropy_over_the_labelled_entries():
    obj = get_objective("classification")
    logits, y = sequence_logits()
    keep = y >= 0
    expected = F.cross_entropy(logits[keep], y[keep])
    assert obj.loss(logits, y).item() == pytest.approx(expected.item())
    assert obj.loss(logits, y, reduction="sum").item() == pytest.approx(expected.item() * keep.sum().item())


def test_per_step_loss_without_reduction_is_each_samples_mean_over_its_labelled_entries():
    obj = get_objective("classification")
    logits, y = sequence_logits()
    per_sample = obj.loss(logits, y, reduction="none")
    assert per_sample.shape == (3,)
    for i in range(3):
        keep = y[i] >= 0
        assert per_sample[i].item() == pytest.approx(F.cross_entropy(logits[i][keep], y[i][keep]).item())


def test_per_step_score_is_each_samples_fraction_correct_over_its_labelled_entries():
    obj = get_objective("classification")
    logits = torch.full((2, 3, 2), -1.0)
    logits[..., 1] = 1.0  # every entry predicts class 1
    y = torch.tensor([[1, 0, IGNORE], [IGNORE, IGNORE, 1]])
    assert obj.score(logits, y).tolist() == [0.5, 1.0]
