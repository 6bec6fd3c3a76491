"""Fits of a 1-D regression stream: each experience's data, the truth and the model's prediction
(``plots/fits.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clframe.config.registry import MONITORS
from clframe.core.monitor import Monitor, RunContext
from clframe.evaluation.evaluate import evaluation_mode
from clframe.evaluation.plots import pyplot, save_figure


def is_1d_regression(scenario: Any) -> bool:
    """Whether the scenario maps one input value to one output value (its fits can be drawn)."""
    return scenario.objective == "regression" and tuple(scenario.input_shape) == (1,) and scenario.n_classes == 1


@torch.no_grad()
def plot_fits(module: Any, stream: Any, path: Path, title: str = "") -> Path:
    """One panel per experience: its training points, the eval targets and the final model's
    prediction with the experience's own task labels, with the eval MSE in the panel title.

    Args:
        module: the trained ``CLModule`` (its ``eval_target()`` is drawn).
        stream: the experiences.
        path: PNG file to write.
        title: figure title (default none).
    """
    n = len(stream)
    fig, axes = pyplot().subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    with evaluation_mode(module.eval_target()) as model:
        for ax, e in zip(axes[0], stream):
            x, order = e.eval.x[:, 0].sort()
            xe, y, t = e.eval.x[order], e.eval.y.reshape(len(x), -1)[order, 0], e.eval.t[order]
            pred = model(xe, t).reshape(len(x), -1)[:, 0]
            mse = float((pred - y).pow(2).mean())
            ax.scatter(e.train.x[:, 0].cpu(), e.train.y.reshape(len(e.train), -1)[:, 0].cpu(), s=6, alpha=0.4,
                       color="grey", label="train")
            ax.plot(x.cpu(), y.cpu(), color="black", label="truth")
            ax.plot(x.cpu(), pred.cpu(), "--", color="tab:red", label="prediction")
            ax.set_title(f"experience {e.index}: MSE {mse:.4f}", fontsize=9)
            ax.set_xlabel("x")
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


@MONITORS.register("fits")
class Fits(Monitor):
    """For a 1-D regression scenario, ``plots/fits.png``: each experience's data, truth and final fit."""

    enabled_by_default = True

    def attach(self, run: RunContext) -> bool:
        return is_1d_regression(run.scenario)

    def write(self, run_dir: Path, module: Any, title: str) -> list[Path]:
        return [plot_fits(module, module.stream, Path(run_dir) / "plots" / "fits.png", title)]
