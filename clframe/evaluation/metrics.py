"""Accuracy-matrix metrics as pure functions.

``R[i][j]`` is the accuracy on experience ``j`` after training on experience ``i``
(a T x T list of lists or array). Definitions follow Lopez-Paz & Ranzato (2017) and
Chaudhry et al. (2018). ``baseline[j]`` is the accuracy on experience ``j`` of the model
before any training.
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


def forward_transfer(R: Sequence[Sequence[float]], baseline: Sequence[float] | None) -> float | None:
    """FWT (Lopez-Paz & Ranzato 2017): mean over ``0 < i < T`` of ``R[i-1][i] - baseline[i]``.

    Args:
        R: the T x T accuracy matrix.
        baseline: [T] accuracy on each experience before any training (no default; ``None`` or
            empty gives ``None``).

    Returns:
        The FWT, or ``None`` when ``T < 2`` or there is no baseline.
    """
    a = _square(R)
    T = len(a)
    if baseline is None or len(baseline) == 0 or T < 2:
        return None
    b = np.asarray(baseline, dtype=float)
    if b.shape != (T,):
        raise ValueError(f"baseline must have one accuracy per experience ({T}), got shape {b.shape}")
    return float(np.mean([a[i - 1, i] - b[i] for i in range(1, T)]))


def summary_metrics(R: Sequence[Sequence[float]], baseline: Sequence[float] | None = None) -> dict[str, float | None]:
    """``final_avg_acc``, ``avg_forgetting``, ``bwt`` and ``fwt`` of ``R``.

    Args:
        R: the T x T accuracy matrix.
        baseline: [T] accuracy on each experience before any training, for ``fwt``
            (default ``None``: ``fwt`` is ``None``).
    """
    return {
        "final_avg_acc": average_accuracy(R),
        "avg_forgetting": average_forgetting(R),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R, baseline),
    }
