"""Backbone diagnostics over a run: whatever ``backbone.diagnostics()`` reports (e.g. the tau_rnn's
timescales per layer), recorded before training, at every loss flush (``logger.log_every``) and at
every experience end, written to ``diagnostics.csv`` and ``plots/timescales.png``, logged to wandb,
and summarised."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from clframe.config.registry import MONITORS
from clframe.core.monitor import Monitor, RunContext
from clframe.models.protocols import HasTimescales, ReportsDiagnostics
from clframe.run.records import atomic_write


@MONITORS.register("diagnostics")
class BackboneDiagnostics(Monitor):
    """Record ``module.backbone.diagnostics()`` when the backbone reports any (``ReportsDiagnostics``).

    Reading them is one small host transfer, made only when the module syncs anyway (a loss flush
    or an experience end). Backbones with ``timescales()`` (one tensor per layer) also have their
    full distribution kept at each experience end, for ``summary.json`` and the plot.
    """

    enabled_by_default = True

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.timescales: dict[int, list[list[float]]] = {}

    def attach(self, run: RunContext) -> bool:
        if not isinstance(run.module.backbone, ReportsDiagnostics):
            return False
        self.record(run.module, "initial")  # before anything trains (a resume replaces the rows)
        return True

    def on_losses(self, module: Any, values: dict[str, float]) -> None:
        self.record(module, "periodic")

    def on_boundary_eval(self, module: Any, experience: int, rows: list[dict[str, Any]]) -> None:
        self.record(module, "boundary")

    def record(self, module: Any, kind: str) -> None:
        """Record one row now: ``initial`` (before training), ``periodic`` or ``boundary``."""
        backbone = module.backbone
        row = {"step": module.cl_step, "experience": module.current_exp, "kind": kind, **backbone.diagnostics()}
        self.rows.append(row)
        if kind == "boundary" and isinstance(backbone, HasTimescales):
            self.timescales[module.current_exp] = [t.float().cpu().tolist() for t in backbone.timescales()]
        module.log_metrics({f"diag/{k}": v for k, v in row.items() if k not in ("step", "experience", "kind")},
                           module.cl_step)

    def at_experience_end(self) -> list[dict[str, Any]]:
        """The rows recorded at experience ends, in order."""
        return [r for r in self.rows if r["kind"] == "boundary"]

    def write(self, run_dir: Path, module: Any, title: str) -> list[Path]:
        """``diagnostics.csv`` and ``plots/timescales.png``."""
        self.write_csv(run_dir)
        fig = plot_timescales(self, module.boundaries, Path(run_dir) / "plots" / "timescales.png", title)
        return [fig] if fig is not None else []

    def write_csv(self, run_dir: Path) -> None:
        """``diagnostics.csv``: one row per recording."""
        if not self.rows:
            return
        fields = list(dict.fromkeys(k for r in self.rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(Path(run_dir) / "diagnostics.csv", buf.getvalue())

    def summary(self, module: Any = None) -> dict[str, Any]:
        """``diagnostics``: the rows at experience ends; ``diagnostics_initial``: the row before training;
        ``timescales``: tau per layer at each end."""
        out: dict[str, Any] = {"diagnostics": self.at_experience_end()}
        initial = [r for r in self.rows if r["kind"] == "initial"]
        if initial:
            out["diagnostics_initial"] = initial[0]
        if self.timescales:
            out["timescales"] = {str(k): v for k, v in self.timescales.items()}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "timescales": self.timescales}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows, self.timescales = list(state["rows"]), dict(state["timescales"])


def plot_timescales(diag: BackboneDiagnostics, boundaries: list[int], path: Path, title: str = "") -> Path | None:
    """Mean, 10th-90th percentile band and max of tau per layer over steps (experience ends marked),
    and the distribution of tau at each experience end. ``None`` when no tau was recorded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({k.split("/")[1] for r in diag.rows for k in r if k.startswith("tau/")})
    if not layers:
        return None
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in diag.rows]
    for lay in layers:
        mean = [r[f"tau/{lay}/mean"] for r in diag.rows]
        line, = ax.plot(steps, mean, label=f"{lay} mean")
        ax.fill_between(steps, [r[f"tau/{lay}/p10"] for r in diag.rows], [r[f"tau/{lay}/p90"] for r in diag.rows],
                        color=line.get_color(), alpha=0.2)
        ax.plot(steps, [r[f"tau/{lay}/max"] for r in diag.rows], "--", color=line.get_color(), label=f"{lay} max")
    for b in boundaries:
        ax.axvline(b, color="grey", lw=0.5)
    ax.set(xlabel="step", ylabel="tau", title="tau per layer (band: 10th-90th percentile)")
    ax.legend(fontsize=7)
    ends = sorted(diag.timescales)
    if ends:
        values = [[v for layer in diag.timescales[e] for v in layer] for e in ends]
        bx.boxplot(values, tick_labels=[str(e) for e in ends])
    bx.set(xlabel="experience end", ylabel="tau (all layers)", title="distribution at experience ends")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
