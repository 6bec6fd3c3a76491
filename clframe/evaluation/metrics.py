"""Accuracy-matrix metrics as pure functions.

``R[i][j]`` is the accuracy on experience ``j`` after training on experience ``i``
(a T x T list of lists or array). Definitions follow Lopez-Paz & Ranzato (2017) and
Chaudhry et al. (2018).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _square(R: Sequence[Sequence[float]]) -> np.ndarray:
    a = np.asarray(R, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square and non-empty, got shape {a.shape}")
    return a


def average_accuracy(R: Sequence[Sequence[float]]) -> float:
    """Mean accuracy over all experiences after the last one: ``mean_j R[T-1][j]``."""
    a = _square(R)
    return float(a[-1].mean())


def average_forgetting(R: Sequence[Sequence[float]]) -> float:
    """Mean over ``j < T-1`` of ``max_{j <= l < T-1} R[l][j] - R[T-1][j]`` (0 for one experience)."""
    a = _square(R)
    T = len(a)
    if T < 2:
        return 0.0
    return float(np.mean([a[j : T - 1, j].max() - a[T - 1, j] for j in range(T - 1)]))


def backward_transfer(R: Sequence[Sequence[float]]) -> float:
    """BWT: mean over ``j < T-1`` of ``R[T-1][j] - R[j][j]`` (negative means forgetting)."""
    a = _square(R)
    T = len(a)
    if T < 2:
        return 0.0
    return float(np.mean([a[T - 1, j] - a[j, j] for j in range(T - 1)]))


def summary_metrics(R: Sequence[Sequence[float]]) -> dict[str, float]:
    """``final_avg_acc``, ``avg_forgetting`` and ``bwt`` of ``R``."""
    return {
        "final_avg_acc": average_accuracy(R),
        "avg_forgetting": average_forgetting(R),
        "bwt": backward_transfer(R),
    }
