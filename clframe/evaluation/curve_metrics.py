"""Continual-evaluation metrics of a recorded :class:`Curve`, as pure functions.

Definitions follow De Lange et al. (2023, "Continual evaluation for lifelong learning:
identifying the stability gap") and Chaudhry et al. (2019, LCA). Conventions:

- the *boundary evaluation* of experience ``k`` is ``curve.boundary_index(k)``, the last
  evaluation with ``step <= boundaries[k]``;
- the *trained* experiences are ``0 .. T-1`` with ``T = len(curve.boundaries)``; the *past*
  experiences at the end of the stream are ``0 .. T-2``;
- the *learning series* of experience ``k`` runs from the boundary evaluation of ``k-1`` (the
  first evaluation for ``k = 0``) up to and including the boundary evaluation of ``k``;
- NaN entries (an experience not evaluated at that time) are ignored; windows are counted in
  evaluations (positions in the curve), not in optimizer steps.

Every function returns plain Python values (``float``/``int``/``None``), never numpy scalars.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from clframe.evaluation.curve import Curve

RECOVERY_TOL = 0.01  # accuracy counts as recovered within 1 point of the pre-switch value
_EPS = 1e-9  # slack for float comparisons against base - RECOVERY_TOL


def _n_trained(curve: Curve) -> int:
    return len(curve.boundaries)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _learning_series(curve: Curve, k: int) -> np.ndarray:
    """Accuracy of ``k`` from the boundary evaluation of ``k-1`` (or the first) to its own, inclusive."""
    start = 0 if k == 0 else curve.boundary_index(k - 1)
    return curve.acc[start : curve.boundary_index(k) + 1, k]


def _max_drop(s: np.ndarray, w: int) -> float:
    """Largest ``s[i] - s[j]`` over ``i < j``, ``j - i < w``, NaNs ignored, clamped at 0."""
    if w < 1:
        raise ValueError(f"window must be >= 1, got {w}")
    n = len(s)
    if n < 2 or w < 2:
        return 0.0
    padded = np.concatenate([np.full(w - 1, -np.inf), np.where(np.isnan(s), -np.inf, s)])
    prev_max = np.lib.stride_tricks.sliding_window_view(padded, w)[:, :-1].max(axis=1)  # max of s[j-w+1 .. j-1]
    drops = prev_max - s
    ok = np.isfinite(drops)
    return float(max(0.0, drops[ok].max())) if ok.any() else 0.0


def min_acc(curve: Curve) -> float | None:
    """min-ACC: mean over past experiences of their minimum accuracy after they were learned.

    Args:
        curve: the recorded evaluations; for each past experience ``k`` the minimum is taken over
            all evaluations with ``step > boundaries[k]``.

    Returns:
        The average minimum, or ``None`` when there is no past experience.
    """
    mins = []
    for k in range(_n_trained(curve) - 1):
        s = curve.acc[curve.steps > curve.boundaries[k], k]
        s = s[~np.isnan(s)]
        if len(s):
            mins.append(float(s.min()))
    return _mean(mins)


def wc_acc(curve: Curve) -> float | None:
    """WC-ACC: ``(1/T) * acc(last trained experience) + (1 - 1/T) * min_acc`` at the end of the stream.

    Args:
        curve: the recorded evaluations; ``T = len(curve.boundaries)``, and the accuracy of the last
            trained experience is its last (non-NaN) evaluated value. For ``T == 1`` it is that value.

    Returns:
        The worst-case accuracy, or ``None`` when nothing was trained or evaluated.
    """
    T = _n_trained(curve)
    if T == 0:
        return None
    s = curve.acc[:, T - 1]
    s = s[~np.isnan(s)]
    if not len(s):
        return None
    last = float(s[-1])
    if T == 1:
        return last
    m = min_acc(curve)
    return None if m is None else float(last / T + (1 - 1 / T) * m)


def anytime_curve(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    """The steps of the evaluations during training and, at each, the mean accuracy over the experiences
    seen so far (the one being trained included; NaN entries ignored): the curve AAA averages."""
    steps, vals = [], []
    for i, e in enumerate(curve.experience):
        row = curve.acc[i, : e + 1] if e >= 0 else curve.acc[i, :0]  # before training: nothing seen
        row = row[~np.isnan(row)]
        if len(row):
            steps.append(int(curve.steps[i]))
            vals.append(float(row.mean()))
    return np.asarray(steps, dtype=np.int64), np.asarray(vals, dtype=float)


def anytime_acc(curve: Curve) -> float | None:
    """AAA, the average anytime accuracy (Caccia et al. 2022; Soutif-Cormerais et al. 2023): at every
    evaluation during training, the mean accuracy over the experiences seen so far (the one being
    trained included), averaged over the evaluations (``anytime_curve``).

    Args:
        curve: the recorded evaluations; the one before training (``experience == -1``) is left out.

    Returns:
        The average, or ``None`` when nothing was evaluated during training.
    """
    return _mean([float(v) for v in anytime_curve(curve)[1]])


def windowed_forgetting(curve: Curve, w: int) -> float | None:
    """WF^w: mean over past experiences of their largest accuracy drop inside ``w`` consecutive evaluations.

    Args:
        curve: the recorded evaluations; the series of past experience ``k`` runs from its boundary
            evaluation to the end (inclusive).
        w: window length in evaluations; a drop ``s[i] - s[j]`` counts when ``i < j`` and ``j - i < w``
            (no default). Drops are clamped at 0.

    Returns:
        The average largest drop, or ``None`` when there is no past experience.
    """
    drops = [_max_drop(curve.acc[curve.boundary_index(k) :, k], w) for k in range(_n_trained(curve) - 1)]
    return _mean(drops)


def windowed_plasticity(curve: Curve, w: int) -> float | None:
    """WP^w: mean over trained experiences of their largest accuracy rise inside ``w`` consecutive evaluations.

    Our reading of De Lange et al.'s WP: the rise is sought while the experience is being learned,
    i.e. over its learning series, from the boundary evaluation of ``k-1`` (the first evaluation
    for ``k = 0``) up to and including its own boundary evaluation.

    Args:
        curve: the recorded evaluations.
        w: window length in evaluations; a rise ``s[j] - s[i]`` counts when ``i < j`` and ``j - i < w``
            (no default). Rises are clamped at 0.

    Returns:
        The average largest rise, or ``None`` when nothing was trained.
    """
    rises = [_max_drop(-_learning_series(curve, k), w) for k in range(_n_trained(curve))]
    return _mean(rises)


def learning_curve_area(curve: Curve, beta: int = 10) -> float | None:
    """LCA_beta (Chaudhry et al. 2019): area under the learning curve of the first ``beta`` evaluations.

    ``Z_k[b]`` (``b = 0 .. beta``) is the ``b``-th non-NaN accuracy of experience ``k`` in its learning
    series (so ``Z_k[0]`` is before any training on ``k`` when ``k`` was evaluated then, e.g. with
    ``monitors.continual.on=all``; with ``monitors.continual.on=seen`` it is the first evaluation during
    its training for ``k > 0``); a series shorter than ``beta + 1`` is padded with its last value.
    ``LCA = mean_b mean_k Z_k[b]``. ``b`` counts evaluations, not mini-batches.

    Args:
        curve: the recorded evaluations.
        beta: last evaluation index of the area (default 10).

    Returns:
        The LCA, or ``None`` when nothing was trained.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    rows = []
    for k in range(_n_trained(curve)):
        s = _learning_series(curve, k)
        s = s[~np.isnan(s)][: beta + 1]
        if len(s):
            rows.append(np.concatenate([s, np.full(beta + 1 - len(s), s[-1])]))
    return float(np.mean(rows)) if rows else None


def stability_gap(curve: Curve, window: int = 100) -> list[dict[str, Any]]:
    """Depth and recovery of the accuracy dip of each past experience after each experience switch.

    For each boundary ``j`` in ``0 .. T-2`` and past experience ``k <= j``: ``base`` is the accuracy of
    ``k`` at the boundary evaluation of ``j``; the evaluations after the switch are those with
    ``step > boundaries[j]`` that belong to experience ``j+1``; ``min`` is the minimum over the first
    ``window`` of them and ``depth = max(0, base - min)``. ``recovery`` is the 1-based position, among
    the evaluations after the switch, of the first one at or after the minimum whose accuracy is
    ``>= base - 0.01``; it is 0 when ``min >= base - 0.01`` (never more than 1 point below base in the
    window) and ``None`` when no evaluation of experience ``j+1`` (the whole of it, not only the window)
    gets back. Pairs with a NaN base or no evaluated accuracy in the window are left out.

    Args:
        curve: the recorded evaluations.
        window: number of evaluations after the switch in which the minimum is sought (default 100).

    Returns:
        One dict per (boundary, experience): ``boundary``, ``experience``, ``base``, ``min``, ``depth``,
        ``recovery``.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out: list[dict[str, Any]] = []
    for j in range(_n_trained(curve) - 1):
        b = curve.boundary_index(j)
        after = np.nonzero((curve.steps > curve.boundaries[j]) & (curve.experience == j + 1))[0]
        for k in range(j + 1):
            base = curve.acc[b, k]
            s = curve.acc[after, k]
            win = s[:window]
            if np.isnan(base) or np.isnan(win).all():
                continue
            lo = float(np.nanmin(win))
            threshold = base - RECOVERY_TOL - _EPS
            recovery: int | None
            if lo >= threshold:
                recovery = 0
            else:
                m = int(np.nanargmin(win))
                back = np.nonzero(s[m:] >= threshold)[0]  # NaN compares False
                recovery = int(m + back[0] + 1) if len(back) else None
            out.append({"boundary": j, "experience": k, "base": float(base), "min": lo,
                        "depth": float(max(0.0, base - lo)), "recovery": recovery})
    return out


def steps_to_acc(curve: Curve, threshold: float) -> list[int | None]:
    """Per experience, the optimizer steps from its start until the curve first shows it at or above
    ``threshold`` while it trains (how fast it is learnt); None if it never gets there.

    Args:
        curve: the recorded evaluations.
        threshold: the score to reach, e.g. 0.95.
    """
    out: list[int | None] = []
    for j in range(len(curve.boundaries)):
        start = int(curve.boundaries[j - 1]) if j > 0 else 0
        hit = np.flatnonzero((curve.experience == j) & (curve.acc[:, j] >= threshold))
        out.append(int(curve.steps[hit[0]]) - start if len(hit) else None)
    return out


def curve_summary(curve: Curve, windows: Sequence[int] = (10, 100), beta: int = 10,
                  gap_window: int = 100) -> dict[str, Any]:
    """All curve metrics, JSON-serialisable.

    Args:
        curve: the recorded evaluations.
        windows: windows ``w`` of WF^w and WP^w, giving keys ``wf_<w>`` and ``wp_<w>`` (default (10, 100)).
        beta: beta of LCA, giving key ``lca_<beta>`` (default 10).
        gap_window: ``window`` of :func:`stability_gap` (default 100).

    Returns:
        ``aaa``, ``min_acc``, ``wc_acc``, ``wf_<w>``, ``wp_<w>``, ``lca_<beta>``, ``stability_gap`` (the list),
        ``stability_gap_depth`` (mean depth over its entries, ``None`` if none) and
        ``stability_gap_first`` (the entry of boundary 0, experience 0, or ``None``), and
        ``steps_to_acc``: ``steps_to_acc`` at 0.9, 0.95 and 0.99, keyed by the threshold.
    """
    gap = stability_gap(curve, gap_window)
    out: dict[str, Any] = {"aaa": anytime_acc(curve), "min_acc": min_acc(curve), "wc_acc": wc_acc(curve)}
    for w in windows:
        out[f"wf_{w}"] = windowed_forgetting(curve, w)
    for w in windows:
        out[f"wp_{w}"] = windowed_plasticity(curve, w)
    out[f"lca_{beta}"] = learning_curve_area(curve, beta)
    out["stability_gap"] = gap
    out["stability_gap_depth"] = _mean([g["depth"] for g in gap])
    out["stability_gap_first"] = next((g for g in gap if g["boundary"] == 0 and g["experience"] == 0), None)
    out["steps_to_acc"] = {str(t): steps_to_acc(curve, t) for t in (0.9, 0.95, 0.99)}
    return out
