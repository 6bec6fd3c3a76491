"""Matplotlib figures of a run: accuracy curves with experience boundaries, accuracy matrix.

Matplotlib is imported by ``pyplot()`` on the first figure, not with this module: it takes about
0.4 s, which ``clframe list`` and ``clframe validate`` (they draw nothing) should not pay."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from clframe.evaluation.curve import Curve
from clframe.evaluation.curve_metrics import anytime_curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display), imported on the first call."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curve: Curve, path: Path, title: str = "", score: str = "accuracy") -> Path:
    """Accuracy (the objective's score) of every experience over training steps, and in black their mean
    over the experiences seen so far, whose average is AAA; dashed lines at experience ends.

    Args:
        curve: the recorded evaluations.
        path: PNG file to write.
        title: figure title (default none).
        score: what the scores are; only ``accuracy`` gets the fixed [0, 1] axis (default ``accuracy``).
    """
    fig, ax = pyplot().subplots(figsize=(9, 4.5))
    for j in range(curve.n_experiences):
        ok = ~np.isnan(curve.acc[:, j])
        if ok.any():
            ax.plot(curve.steps[ok], curve.acc[ok, j], lw=1.2, label=f"exp {j}")
    steps, seen = anytime_curve(curve)
    if len(seen):  # the curve AAA averages
        ax.plot(steps, seen, color="black", lw=2.0, label=f"mean over seen (AAA {seen.mean():.3f})")
    for k, b in enumerate(curve.boundaries[:-1]):
        ax.axvline(b, color="grey", ls="--", lw=0.8, label="experience end" if k == 0 else None)
    ax.set(xlabel="training step", ylabel=score, title=title)
    if score == "accuracy":
        ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower left", fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_acc_matrix(R: Sequence[Sequence[float]], path: Path, title: str = "", score: str = "accuracy") -> Path:
    """The accuracy matrix as an annotated heatmap (row: after training i; column: evaluated on j).

    Args:
        R: the T x T accuracy matrix.
        path: PNG file to write.
        title: figure title (default none).
        score: what the entries are; only ``accuracy`` gets the fixed [0, 1] colour scale (default
            ``accuracy``).
    """
    a = np.asarray(R, dtype=float)
    lo, hi = (0.0, 1.0) if score == "accuracy" else (np.nanmin(a), np.nanmax(a))
    fig, ax = pyplot().subplots(figsize=(1.0 + 0.8 * a.shape[1], 0.8 + 0.7 * a.shape[0]))
    im = ax.imshow(a, vmin=lo, vmax=hi, cmap="viridis")
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if a[i, j] < lo + 0.6 * (hi - lo) else "black")
    ax.set(xlabel="evaluated on experience", ylabel="after training experience", title=title,
           xticks=range(a.shape[1]), yticks=range(a.shape[0]))
    fig.colorbar(im, ax=ax, fraction=0.046, label=score)
    return save_figure(fig, path)


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` (a PNG; its folder created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path
