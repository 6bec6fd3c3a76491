"""Loss-of-plasticity diagnostics per task: online accuracy, plasticity, dead units, effective
rank, weight and gradient norms, largest singular values.

Step-level values are summed on the device; everything reaches the host in one transfer at
each task end, so monitoring adds no host sync per step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from clframe.evaluation.evaluate import evaluation_mode

if TYPE_CHECKING:
    from clframe.core.module import CLModule

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.SiLU)


def effective_rank(features: Tensor) -> Tensor:
    """``exp(H(p))`` with ``p`` the singular values of ``features`` [N, D] normalised to sum 1
    (Roy & Vetterli, 2007): D for isotropic features, 1 for rank-one features."""
    s = torch.linalg.svdvals(features.float())
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


def layer_stats(module: nn.Module, x: Tensor, t: Tensor) -> dict[str, Tensor]:
    """Per layer, on the probe inputs ``x``: the fraction of dead units (never positive; for ReLU-like
    activations), the effective rank of the features, and per weight matrix its Frobenius norm and
    largest singular value. Values stay on the device."""
    acts: dict[str, Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: acts.__setitem__(name, out.flatten(1)))
             for name, m in module.named_modules() if isinstance(m, ACTIVATIONS)]
    try:
        with evaluation_mode(module) as model, torch.no_grad():
            model(x, t)
    finally:
        for h in hooks:
            h.remove()
    out: dict[str, Tensor] = {}
    for name, h in acts.items():
        out[f"dead_fraction/{name}"] = ((h > 0).sum(0) == 0).float().mean()
        out[f"effective_rank/{name}"] = effective_rank(h)
    for name, p in module.named_parameters():
        if p.ndim >= 2:
            w = p.detach().flatten(1)
            out[f"weight_norm/{name}"] = w.norm()
            out[f"sigma_max/{name}"] = torch.linalg.matrix_norm(w, 2)
    return out


class PlasticityMonitor(Callback):
    """Collect loss-of-plasticity diagnostics, one row per task (experience).

    Per task: online accuracy (``online_acc``; for regression the squared error, ``online_error``)
    and loss (on each batch's stream samples, before the update);
    plasticity ``clamp(1 - L_after / L_before, 0, 1)`` on the same samples (one extra forward pass
    every ``plasticity_every`` steps); mean gradient norm; and, at the task end on ``probe`` samples
    of its eval data, the layer statistics of ``layer_stats``.

    Args:
        plasticity_every: steps between plasticity measurements; None: never (default 1).
        probe: eval samples of each task for the layer statistics (default 256).
    """

    def __init__(self, plasticity_every: int | None = 1, probe: int = 256) -> None:
        self.plasticity_every, self.probe = plasticity_every, probe
        self.rows: list[dict[str, float]] = []
        self._reset()

    def _reset(self) -> None:
        self._sums: Tensor | None = None  # [score, loss, plasticity, grad_norm]
        self._n = self._steps = self._n_plasticity = 0

    # -- per step -----------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: Any, pl_module: CLModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        ctx = pl_module.last_ctx
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
    def _on_module_event(self, module: CLModule, event: str, payload: dict[str, Any]) -> None:
        if event != "boundary_eval" or self._sums is None:
            return
        exp = payload["experience"]
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

    def on_train_start(self, trainer: Any, pl_module: CLModule) -> None:
        pl_module.listeners.append(self._on_module_event)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "sums": self._sums, "n": self._n, "steps": self._steps,
                "n_plasticity": self._n_plasticity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state["rows"]]
        self._sums, self._n, self._steps = state["sums"], state["n"], state["steps"]
        self._n_plasticity = state["n_plasticity"]
