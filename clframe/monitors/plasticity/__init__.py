"""Loss-of-plasticity diagnostics per task: online accuracy, plasticity, dead units, effective
rank, weight and gradient norms, largest singular values.

Step-level values are summed on the device; everything reaches the host in one transfer at
each task end, so monitoring adds no host sync per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
from annotated_types import Ge
from torch import Tensor

from clframe.config.registry import MONITORS
from clframe.core.monitor import CompareOption, Monitor
from clframe.evaluation.evaluate import evaluation_mode
from clframe.monitors.plasticity.report import plasticity_summary, plot_plasticity
from clframe.monitors.plasticity.stats import layer_stats

if TYPE_CHECKING:
    from clframe.compare import Comparison
    from clframe.core.module import CLModule
    from clframe.core.strategy import StepContext


@MONITORS.register("plasticity")
class PlasticityMonitor(Monitor):
    """Collect loss-of-plasticity diagnostics, one row per task (experience).

    Per task: online accuracy (``online_acc``; for regression the squared error, ``online_error``)
    and loss (on each batch's stream samples, before the update);
    plasticity ``clamp(1 - L_after / L_before, 0, 1)`` on the same samples (one extra forward pass
    every ``every`` steps); mean gradient norm; and, at the task end on ``probe`` samples of its
    eval data, the layer statistics of ``layer_stats``. Writes ``summary.json["plasticity"]`` (and
    means over tasks 2-11 and the last 10), ``plots/plasticity.png`` and, in ``clframe compare``,
    ``plasticity_comparison.png``.

    Args:
        every: steps between plasticity measurements (an extra forward pass); None: never (default 1).
        probe: eval samples of each task for the layer statistics (default 256).
    """

    enabled_by_default = False
    compare_options = {"metric": CompareOption(
        "first panel of plasticity_comparison.png: end-of-task accuracy (task_end) or the online accuracy/error "
        "per task (online)", ("task_end", "online"), "task_end")}

    def __init__(self, every: Annotated[int, Ge(1)] | None = 1, probe: Annotated[int, Ge(1)] = 256) -> None:
        self.plasticity_every, self.probe = every, probe
        self.rows: list[dict[str, float]] = []
        self._reset()

    def _reset(self) -> None:
        self._sums: Tensor | None = None  # [score, loss, plasticity, grad_norm]
        self._n = self._steps = self._n_plasticity = 0

    # -- per step -----------------------------------------------------------------------------
    def on_step_end(self, ctx: StepContext) -> None:
        pl_module = ctx.module
        new = ctx.batch.new_samples()
        n = len(new)
        logits = ctx.logits[:n].detach()
        objective = pl_module.objective
        loss_before = objective.loss(logits, new.y)
        plasticity = loss_before.new_zeros(())
        if self.plasticity_every and pl_module.cl_step % self.plasticity_every == 0:
            with evaluation_mode(pl_module.eval_target()) as model, torch.no_grad():
                loss_after = objective.loss(model(new.x, new.t), new.y)
            plasticity = (1 - loss_after / loss_before.clamp_min(1e-12)).clamp(0, 1)
            self._n_plasticity += 1
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        grad_norm = torch.stack(torch._foreach_norm(grads)).norm() if grads else loss_before.new_zeros(())
        step = torch.stack([objective.score(logits, new.y).sum(), loss_before * n, plasticity, grad_norm])
        self._sums = step if self._sums is None else self._sums.to(step.device) + step
        self._n += n
        self._steps += 1

    # -- per task -------------------------------------------------------------------------------
    def on_boundary_eval(self, module: CLModule, experience: int, rows: list[dict[str, Any]]) -> None:
        if self._sums is None:
            return
        exp = experience
        data = module.stream[exp].eval
        stats = layer_stats(module.eval_target(), data.x[: self.probe], data.t[: self.probe])
        values = torch.cat([self._sums, torch.stack(list(stats.values()))]).tolist()  # the one transfer
        score, loss, plasticity, grad_norm = values[:4]
        objective = module.objective
        self.rows.append({
            "task": exp, "step": module.cl_step, objective.online_key: objective.online(score) / self._n,
            "online_loss": loss / self._n,
            "plasticity": plasticity / self._n_plasticity if self._n_plasticity else float("nan"),
            "grad_norm": grad_norm / self._steps, **dict(zip(stats, values[4:])),
        })
        self._reset()

    # -- results -------------------------------------------------------------------------------
    def summary(self, module: CLModule) -> dict[str, Any]:
        return plasticity_summary(self.rows, module.acc_matrix)

    def write(self, run_dir: Path, module: CLModule, title: str) -> list[Path]:
        task_end = plasticity_summary(self.rows, module.acc_matrix)["task_end_acc"]
        return [plot_plasticity(self.rows, task_end, run_dir / "plots" / "plasticity.png", title)]

    @classmethod
    def compare(cls, cmp: Comparison, out_dir: Path, metric: str = "task_end") -> list[Path]:
        from clframe.monitors.plasticity.compare import PNG, plot_plasticity_comparison

        path = plot_plasticity_comparison(cmp, out_dir / PNG, metric)
        return [path] if path else []

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "sums": self._sums, "n": self._n, "steps": self._steps,
                "n_plasticity": self._n_plasticity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state["rows"]]
        self._sums, self._n, self._steps = state["sums"], state["n"], state["steps"]
        self._n_plasticity = state["n_plasticity"]
