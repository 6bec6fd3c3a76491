"""Accuracy-matrix metrics on hand-made matrices with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from clframe.evaluation.metrics import (
    average_accuracy,
    average_forgetting,
    backward_transfer,
    forward_transfer,
    summary_metrics,
)


def test_one_experience():
    R = [[0.8]]
    assert average_accuracy(R) == pytest.approx(0.8)
    assert average_forgetting(R) == 0.0
    assert backward_transfer(R) == 0.0
    assert summary_metrics(R) == {"final_avg_acc": pytest.approx(0.8), "avg_forgetting": 0.0, "bwt": 0.0, "fwt": None}


def test_perfect_retention():
    R = [[0.9, 0.1, 0.0],
         [0.9, 0.8, 0.0],
         [0.9, 0.8, 0.7]]
    assert average_accuracy(R) == pytest.approx(0.8)
    assert average_forgetting(R) == pytest.approx(0.0)
    assert backward_transfer(R) == pytest.approx(0.0)


def test_catastrophic_forgetting():
    R = [[1.0, 0.0, 0.0],
         [0.0, 1.0, 0.0],
         [0.0, 0.0, 1.0]]
    assert average_accuracy(R) == pytest.approx(1 / 3)
    assert average_forgetting(R) == pytest.approx(1.0)
    assert backward_transfer(R) == pytest.approx(-1.0)


def test_forgetting_uses_the_best_earlier_accuracy_bwt_the_diagonal():
    # experience 0 peaks after experience 1 (0.9), not right after training (0.5)
    R = [[0.5, 0.0, 0.0],
         [0.9, 0.6, 0.0],
         [0.7, 0.6, 0.8]]
    # forgetting: exp 0: max(0.5, 0.9) - 0.7 = 0.2; exp 1: 0.6 - 0.6 = 0
    assert average_forgetting(R) == pytest.approx(0.1)
    # bwt: exp 0: 0.7 - 0.5 = +0.2; exp 1: 0.6 - 0.6 = 0
    assert backward_transfer(R) == pytest.approx(0.1)
    assert average_accuracy(R) == pytest.approx(0.7)


def test_forgetting_ignores_rows_before_the_experience_was_trained():
    # high accuracy on exp 1 *before* training on it (row 0) must not count as something forgotten
    R = [[0.9, 0.95],
         [0.9, 0.6]]
    assert average_forgetting(R) == pytest.approx(0.0)
    assert backward_transfer(R) == pytest.approx(0.0)


def test_positive_backward_transfer_and_negative_forgetting_is_not_clipped():
    R = [[0.5, 0.0],
         [0.7, 0.9]]
    assert backward_transfer(R) == pytest.approx(0.2)
    assert average_forgetting(R) == pytest.approx(-0.2)


def test_four_experiences_mixed():
    R = np.array([[0.9, 0.0, 0.0, 0.0],
                  [0.6, 0.8, 0.0, 0.0],
                  [0.7, 0.4, 0.9, 0.0],
                  [0.5, 0.5, 0.6, 1.0]])
    assert average_accuracy(R) == pytest.approx(0.65)
    # forgetting: (0.9 - 0.5) + (0.8 - 0.5) + (0.9 - 0.6) = 1.0 over 3
    assert average_forgetting(R) == pytest.approx(1.0 / 3)
    # bwt: (0.5 - 0.9) + (0.5 - 0.8) + (0.6 - 0.9) = -1.0 over 3
    assert backward_transfer(R) == pytest.approx(-1.0 / 3)
    s = summary_metrics(R.tolist())
    assert set(s) == {"final_avg_acc", "avg_forgetting", "bwt", "fwt"}
    assert s["fwt"] is None
    assert all(isinstance(s[k], float) for k in ("final_avg_acc", "avg_forgetting", "bwt"))


@pytest.mark.parametrize("bad", [[[0.1, 0.2]], [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], [], [0.5, 0.6], [[[0.5]]]])
@pytest.mark.parametrize("fn", [average_accuracy, average_forgetting, backward_transfer, summary_metrics])
def test_non_square_raises(fn, bad):
    with pytest.raises(ValueError, match="square"):
        fn(bad)


def test_forward_transfer_hand_matrix():
    R = [[0.9, 0.25, 0.1],
         [0.8, 0.9, 0.5],
         [0.7, 0.8, 0.9]]
    baseline = [0.1, 0.2, 0.3]
    # (R[0][1] - b[1]) + (R[1][2] - b[2]) = 0.05 + 0.2 over 2; the diagonal and below do not count
    assert forward_transfer(R, baseline) == pytest.approx(0.125)
    assert forward_transfer(np.array(R), np.array(baseline)) == pytest.approx(0.125)


def test_forward_transfer_can_be_negative():
    R = [[0.9, 0.0],
         [0.5, 0.9]]
    assert forward_transfer(R, [0.1, 0.1]) == pytest.approx(-0.1)


def test_forward_transfer_none_without_baseline_or_with_one_experience():
    R = [[0.9, 0.3], [0.8, 0.9]]
    assert forward_transfer(R, None) is None
    assert forward_transfer(R, []) is None
    assert forward_transfer([[0.8]], [0.1]) is None


def test_forward_transfer_baseline_length_must_match():
    with pytest.raises(ValueError, match="baseline"):
        forward_transfer([[0.9, 0.3], [0.8, 0.9]], [0.1, 0.2, 0.3])


def test_summary_metrics_with_baseline():
    R = [[0.9, 0.3],
         [0.8, 0.9]]
    s = summary_metrics(R, [0.1, 0.1])
    assert s["fwt"] == pytest.approx(0.2)
    assert isinstance(s["fwt"], float)
    assert s["bwt"] == pytest.approx(-0.1)
    assert summary_metrics(R, baseline=[0.1, 0.1]) == s
    assert summary_metrics(R)["fwt"] is None
