"""Prequential (online) evaluation: every training batch's stream samples are scored by the model
as it was before that batch's update, so the stream itself is the test set.

Per window of ``window`` steps: online accuracy (regression: squared error), the mean one-step
predictive log-likelihood, the expected calibration error (classification), and the head's
``diagnostics()`` (e.g. the Kalman head's learned drift ``gamma``) at the window end. Sums stay
on the device; closed windows reach the host in one transfer per experience end.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import Tensor

from clframe.config.registry import MONITORS
from clframe.core.monitor import Monitor
from clframe.core.objectives import IGNORE
from clframe.models.protocols import ReportsDiagnostics
from clframe.run.records import atomic_write

if TYPE_CHECKING:
    from clframe.compare import Comparison
    from clframe.core.module import CLModule
    from clframe.core.strategy import StepContext

LOG_2PI = math.log(2 * math.pi)


def ece_from_bins(count: list[float], conf: list[float], correct: list[float]) -> float:
    """Expected calibration error ``sum_b (n_b / N) |acc_b - conf_b|`` from per-bin sums: sample
    count, summed confidence and summed correctness. NaN when the bins are empty."""
    total = sum(count)
    if total <= 0:
        return float("nan")
    return sum(abs(k - c) for n, c, k in zip(count, conf, correct) if n > 0) / total


@MONITORS.register("online")
class OnlineMonitor(Monitor):
    """Prequential evaluation of the training stream, one row per window of steps.

    Windows are fixed step ranges ``[k * window, (k + 1) * window)`` (experience boundaries do not
    close them); the final partial window is kept at train end. A row's ``step`` is the module's
    ``cl_step`` after the window's last update (the convention of ``module.boundaries`` and
    metrics.csv), its ``experience`` that of the window's last step.

    Classification: ``online_acc`` (argmax == label); ``online_loglik``, the head's per-sample
    ``ctx.loglik`` when it gives one, else ``log_softmax(logits)[y]``; ``ece`` over ``ece_bins``
    equal-width bins of the confidence (the largest softmax probability). Sequence labels
    ([B, S] with ``IGNORE`` padding) count each labelled entry as one prediction.

    Regression: ``online_error`` (squared error, mean over output dims); ``online_loglik``, the
    head's ``ctx.loglik`` when given, else the Gaussian log-likelihood of the target (summed over
    output dims) under mean = the outputs and a plug-in variance per output dim: an exponential
    moving average of past batches' mean squared errors (decay ``ema``, starting at 1.0), taken
    before this batch's errors are added. This gives a head that predicts no variance (e.g. SGD)
    a predictive log-likelihood comparable with a Bayesian head's.

    Args:
        window: steps per window (default 100).
        ece_bins: equal-width confidence bins of the ECE (default 15).
        ema: decay of the plug-in variance's moving average, regression only (default 0.99).

    Writes ``summary.json["online"]``, ``online.csv``, ``plots/online.png``, wandb ``online/`` and, in
    ``clframe compare``, ``online_comparison.png``.
    """

    def __init__(self, window: Annotated[int, Ge(1)] = 100, ece_bins: Annotated[int, Ge(1)] = 15,
                 ema: Annotated[float, Interval(ge=0, lt=1)] = 0.99) -> None:
        self.window, self.ece_bins, self.ema = window, ece_bins, ema
        self._module: CLModule | None = None
        self._rows: list[dict[str, Any]] = []
        self._pending: list[tuple[int, int, Tensor]] = []  # closed windows: (step, experience, sums + diagnostics)
        self._window: Tensor | None = None  # sums of the open window (layout: _fields)
        self._totals: dict[int, Tensor] = {}  # sums per experience
        self._s2: Tensor | None = None  # regression plug-in variance per output dim
        self._last = (-1, -1)  # (step, experience) of the latest step counted
        self._diag_keys: list[str] | None = None
        self.regression: bool | None = None

    # -- per step -----------------------------------------------------------------------------------
    def on_step_end(self, ctx: StepContext) -> None:
        pl_module = ctx.module
        if ctx.step <= self._last[0]:  # counted already
            return
        self.regression = pl_module.objective.regression
        n = len(ctx.batch.new_samples())
        y = ctx.batch.y[:n]
        out = ctx.logits[:n].detach()
        loglik = None if ctx.loglik is None else ctx.loglik[:n].detach()
        inc = self._regression_sums(out, y, loglik) if self.regression else self._classification_sums(out, y, loglik)
        self._window = inc if self._window is None else self._window.to(inc.device) + inc
        prev = self._totals.get(ctx.experience)
        self._totals[ctx.experience] = inc if prev is None else prev.to(inc.device) + inc
        self._last = (ctx.step, ctx.experience)
        if (ctx.step + 1) % self.window == 0:
            self._close(pl_module)

    def _dtype(self, device: torch.device) -> torch.dtype:
        # double sums: float32 counts stop being exact past 2**24 samples
        return torch.float32 if device.type == "mps" else torch.float64

    def _classification_sums(self, logits: Tensor, y: Tensor, loglik: Tensor | None) -> Tensor:
        """``[n, correct, loglik, bin counts (B), bin confidence sums (B), bin correct sums (B)]``."""
        dtype = self._dtype(logits.device)
        if logits.ndim == 3:  # per-entry labels of a sequence: score the labelled entries
            logits, y, loglik = logits.flatten(0, 1), y.flatten(), None
        logp = F.log_softmax(logits.float(), -1)
        w = (y != IGNORE).to(dtype)
        y = y.clamp(min=0)  # IGNORE entries have weight 0; any valid index will do
        conf, pred = logp.max(-1)
        conf = conf.exp().to(dtype)
        correct = (pred == y).to(dtype)
        ll = (logp.gather(1, y.unsqueeze(1)).squeeze(1) if loglik is None else loglik).to(dtype)
        # bins ((b - 1) / B, b / B]: a confidence of exactly 1 goes to the last one
        idx = (conf * self.ece_bins).ceil().long().sub(1).clamp(0, self.ece_bins - 1)
        bins = torch.zeros(3, self.ece_bins, dtype=dtype, device=logits.device)
        bins.index_add_(1, idx, torch.stack([w, conf * w, correct * w]))
        head = torch.stack([w.sum(), (correct * w).sum(), (ll * w).sum()])
        return torch.cat([head, bins.flatten()])

    def _regression_sums(self, out: Tensor, y: Tensor, loglik: Tensor | None) -> Tensor:
        """``[n, squared error, loglik]``; updates the plug-in variance."""
        dtype = self._dtype(out.device)
        y = y.reshape(len(y), -1).to(dtype)
        sq = (out.reshape(y.shape).to(dtype) - y).pow(2)  # [n, D]
        s2 = self._s2.to(out.device) if self._s2 is not None else torch.ones(y.shape[1], dtype=dtype, device=out.device)
        if loglik is None:
            loglik = -0.5 * (LOG_2PI + s2.log() + sq / s2).sum(1)
        # the variance of this step's prediction uses past errors only; this batch's come in after
        self._s2 = self.ema * s2 + (1 - self.ema) * sq.mean(0)
        return torch.stack([out.new_tensor(len(y), dtype=dtype), sq.mean(1).sum(), loglik.to(dtype).sum()])

    def _close(self, module: Any) -> None:
        """End the open window: queue its sums and the head's diagnostics as one device row."""
        if self._window is None:
            return
        parts = [self._window]
        head = getattr(module, "head", None)
        if isinstance(head, ReportsDiagnostics):
            diag = head.diagnostics()
            if self._diag_keys is None:
                self._diag_keys = list(diag)
            parts.append(torch.stack([torch.as_tensor(diag.get(k, math.nan), device=self._window.device)
                                      .to(self._window.dtype).reshape(()) for k in self._diag_keys]))
        elif self._diag_keys:  # no head to read (e.g. finish() without a module): keep the row's layout
            parts.append(self._window.new_full((len(self._diag_keys),), math.nan))
        step, exp = self._last
        self._pending.append((step + 1, exp, torch.cat(parts)))
        self._window = None

    def _flush(self) -> None:
        """Move the queued windows to ``rows`` (one host transfer) and to wandb."""
        if not self._pending:
            return
        sizes = [len(t) for _, _, t in self._pending]
        device = self._pending[0][2].device
        values = torch.cat([t.to(device) for _, _, t in self._pending]).tolist()  # the one transfer
        new, i = [], 0
        for (step, exp, _), size in zip(self._pending, sizes):
            row = values[i: i + size]
            i += size
            k = size - len(self._diag_keys or [])
            new.append({"step": step, "experience": exp, **self._metrics(row[:k]),
                        **dict(zip(self._diag_keys or [], row[k:]))})
        self._pending = []
        self._rows.extend(new)
        if self._module is not None:
            for r in new:
                self._module.log_metrics({f"online/{k}": v for k, v in r.items() if k not in ("step", "experience")},
                                         r["step"])

    def _metrics(self, sums: list[float]) -> dict[str, Any]:
        """The metrics of one sums vector (a window's or a total's)."""
        n = sums[0]
        mean = (lambda s: s / n) if n > 0 else (lambda s: float("nan"))
        if self.regression:
            return {"n": int(n), "online_error": mean(sums[1]), "online_loglik": mean(sums[2])}
        B = self.ece_bins
        return {"n": int(n), "online_acc": mean(sums[1]), "online_loglik": mean(sums[2]),
                "ece": ece_from_bins(sums[3: 3 + B], sums[3 + B: 3 + 2 * B], sums[3 + 2 * B: 3 + 3 * B])}

    # -- events -------------------------------------------------------------------------------------
    def setup(self, module: CLModule) -> None:
        self._module = module

    def on_boundary_eval(self, module: CLModule, experience: int, rows: list[dict[str, Any]]) -> None:
        self._flush()

    def on_log_flush(self, module: CLModule) -> None:
        self._flush()  # the closed windows reach wandb before later steps do

    def on_train_end(self, module: CLModule) -> None:
        self._close(module)
        self._flush()

    # -- results ------------------------------------------------------------------------------------
    @property
    def rows(self) -> list[dict[str, Any]]:
        """One dict per closed window (queued windows are transferred first)."""
        self._flush()
        return self._rows

    def finish(self, module: Any = None) -> None:
        """Close the partial window (if ``on_train_end`` did not, e.g. a finished run loaded from its
        checkpoint) and transfer everything. ``module``: where to read the head's diagnostics
        (default None: none for this window)."""
        self._close(module)
        self._flush()

    def summary(self, module: CLModule | None = None) -> dict[str, Any]:
        """``online``: overall and per-experience online metrics, the window, the mean windowed ECE, and
        each head diagnostic's final value and trajectory (``<key>_trajectory``: ``{"step": [...],
        "value": [...]}``). ``module``: where the open window's head diagnostics are read (a finished run
        loaded from its checkpoint still has its last window open) (default None)."""
        return {"online": self.results(module)}

    def results(self, module: CLModule | None = None) -> dict[str, Any]:
        """The ``online`` entry of ``summary``."""
        self.finish(module)
        exps = sorted(self._totals)
        if not exps:
            return {"window": self.window, "per_experience": []}
        device = self._totals[exps[0]].device
        per = torch.stack([self._totals[e].to(device) for e in exps])
        values = torch.cat([per.sum(0, keepdim=True), per]).tolist()  # one transfer
        out: dict[str, Any] = {**self._metrics(values[0]), "window": self.window}
        out["per_experience"] = [{"experience": e, **self._metrics(v)} for e, v in zip(exps, values[1:])]
        rows = self._rows
        if rows and "ece" in rows[0]:
            # the mean of the windows' ECEs: calibration as the stream moves (the whole-run ECE above
            # lets over- and under-confident stretches cancel)
            out["ece_windowed_mean"] = sum(r["ece"] for r in rows) / len(rows)
        for key in self._diag_keys or []:
            out[key] = rows[-1][key] if rows else None
            out[f"{key}_trajectory"] = {"step": [r["step"] for r in rows], "value": [r[key] for r in rows]}
        return out

    def write(self, run_dir: Path, module: CLModule, title: str) -> list[Path]:
        """``online.csv`` (one row per window) and ``plots/online.png``."""
        self.write_csv(run_dir)
        fig = self.plot(module.boundaries, Path(run_dir) / "plots" / "online.png", title)
        return [fig] if fig is not None else []

    @classmethod
    def compare(cls, cmp: Comparison, out_dir: Path, **options: Any) -> list[Path]:
        from clframe.monitors.online.compare import PNG, plot_online_comparison

        path = plot_online_comparison(cmp, out_dir / PNG)
        return [path] if path else []

    def write_csv(self, run_dir: str | Path) -> None:
        """``online.csv``: one row per window."""
        rows = self.rows
        if not rows:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(Path(run_dir) / "online.csv", buf.getvalue())

    def plot(self, boundaries: list[int], path: str | Path, title: str = "") -> Path | None:
        """Panels stacked over steps: online accuracy (or error), online log-likelihood, windowed ECE
        (classification) and one per head diagnostic; experience ends dashed. ``None`` without rows.

        Args:
            boundaries: ``module.boundaries``, the steps at experience ends.
            path: PNG file to write.
            title: figure title (default none).
        """
        from clframe.evaluation.plots import pyplot, save_figure

        rows = self.rows
        if not rows:
            return None
        panels = [("online_error", "online squared error") if self.regression else ("online_acc", "online accuracy"),
                  ("online_loglik", "online log-likelihood")]
        panels += [] if self.regression else [("ece", f"ECE ({self.ece_bins} bins)")]
        panels += [(k, k) for k in self._diag_keys or []]
        fig, axes = pyplot().subplots(len(panels), 1, figsize=(9, 1.9 * len(panels) + 0.6), sharex=True, squeeze=False)
        steps = [r["step"] for r in rows]
        for ax, (key, label) in zip(axes[:, 0], panels):
            ax.plot(steps, [r[key] for r in rows], lw=1.2, marker="." if len(rows) < 50 else None)
            for k, b in enumerate(boundaries[:-1]):
                ax.axvline(b, color="grey", ls="--", lw=0.8, label="experience end" if k == 0 else None)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        if not self.regression:
            axes[0, 0].set_ylim(-0.02, 1.02)
        if len(boundaries) > 1:
            axes[0, 0].legend(loc="lower left", fontsize=8)
        axes[0, 0].set_title(f"{title} | online (prequential), window {self.window} steps" if title
                             else f"online (prequential), window {self.window} steps")
        axes[-1, 0].set_xlabel("training step")
        return save_figure(fig, Path(path))

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rows": self._rows, "pending": self._pending, "window": self._window, "totals": self._totals,
                "s2": self._s2, "last": list(self._last), "diag_keys": self._diag_keys, "regression": self.regression}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # tensors come back on the CPU; each moves to the training device when it is next added to
        self._rows = [dict(r) for r in state["rows"]]
        self._pending = [(int(s), int(e), t) for s, e, t in state["pending"]]
        self._window, self._s2 = state["window"], state["s2"]
        self._totals = {int(k): v for k, v in state["totals"].items()}
        self._last = (int(state["last"][0]), int(state["last"][1]))
        self._diag_keys = None if state["diag_keys"] is None else list(state["diag_keys"])
        self.regression = state["regression"]
