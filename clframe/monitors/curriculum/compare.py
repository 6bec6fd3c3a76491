"""The curriculum comparison figure: per level (e.g. each N of N-parity), per group of runs, over seeds.

Reads what a curriculum run leaves in summary.json: ``curriculum`` (when each level started and was
solved), the accuracy matrix, and, for backbones with timescales, the diagnostics rows recorded at
each experience end.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clframe.compare.bands import Band, band, num

if TYPE_CHECKING:
    from clframe.compare.runs import Comparison, Group, Run

PNG = "curriculum_comparison.png"
PANELS = {
    "solved_step": "step at which the level was solved",
    "first_level_score": "score on the first level at each level's end",
    "tau_mean": "mean tau at each level's end",
    "tau_max": "largest tau at each level's end",
}


def parity_readout_on_2(n: int) -> float:
    """Accuracy on 2-parity of a perfect N-parity readout when bits are Bernoulli(p), p ~ U(0, 1): the
    two agree when the N - 2 bits before the last two have even parity, which happens with probability
    1/2 + E[(1 - 2p)^(N-2)] / 2: 1/2 + 1/(2(N - 1)) for even N, 1/2 for odd N."""
    return 1.0 if n == 2 else (0.5 + 0.5 / (n - 1) if n % 2 == 0 else 0.5)


def _tau(run: Run, stat: str) -> list[float]:
    """``stat`` (mean or max) of tau over layers at each experience end, in experience order."""
    rows = run.summary.get("diagnostics") or []
    out = []
    for r in sorted((r for r in rows if isinstance(r, dict)), key=lambda r: r["experience"]):
        values = [num(v) for k, v in r.items() if k.startswith("tau/") and k.endswith(f"/{stat}")]
        out.append((max(values) if stat == "max" else float(np.mean(values))) if values else math.nan)
    return out


def curriculum_series(group: Group) -> tuple[list[Any], dict[str, Band]] | None:
    """The level names and the ``PANELS`` series of one group (bands over its curriculum runs); None without any."""
    runs = [r for r in group.runs if isinstance(r.summary.get("curriculum"), dict)]
    if not runs:
        return None
    levels = runs[0].summary["curriculum"]["levels"]
    solved = [[num(r.summary["curriculum"]["solved_step"].get(str(n))) for n in levels] for r in runs]
    first = [[num(row[0]) for row in r.summary.get("acc_matrix", [])] for r in runs]
    series = {"solved_step": band(solved), "first_level_score": band(first)}
    for stat in ("mean", "max"):
        per_run = [_tau(r, stat) for r in runs]
        if any(math.isfinite(v) for values in per_run for v in values):
            series[f"tau_{stat}"] = band(per_run)
    return levels, series


def plot_curriculum_comparison(cmp: Comparison, path: Path) -> Path | None:
    """Four panels over the levels, one line per group (mean over seeds, min–max band): the step each level
    was solved at, the score on the first level at each level's end (for N-parity with the analytic score of
    a perfect N-parity readout on N = 2), and the mean and largest tau. None when no run is a curriculum."""
    drawn = [(g, s) for g in cmp.groups if (s := curriculum_series(g))]
    if not drawn:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(17, 4.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(PANELS))
    handles = []
    for g, (levels, series) in drawn:
        color = None
        for ax, key in zip(axes, PANELS):
            band = series.get(key)
            if band is None:
                continue
            x = np.asarray(levels[: len(band.mean)])
            (line,) = ax.plot(x, band.mean, lw=1.4, color=color, marker="o", ms=3)
            color = line.get_color()
            ax.fill_between(x, band.lo, band.hi, color=color, alpha=0.2, lw=0)
        handles.append((line, f"{g.label} (n={len([r for r in g.runs if r.summary.get('curriculum')])})"))
    if any(str(r.summary.get("scenario", "")).startswith("parity") for g, _ in drawn for r in g.runs):
        levels = drawn[0][1][0]
        (ref,) = axes[1].plot(levels, [parity_readout_on_2(n) for n in levels], "k--", lw=1)
        handles.append((ref, "perfect N-parity readout on N=2 (p ~ U(0,1))"))
    for ax, title in zip(axes, PANELS.values()):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("level (N)")
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle("Curricula per level: mean over seeds, band min–max", fontsize=11)
    fig.legend(*zip(*handles), loc="lower center", ncol=min(len(handles), 3), fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.2, top=0.86, wspace=0.22)
    fig.savefig(path, dpi=100)
    return Path(path)
