"""The continual evaluator: accuracy on fixed subsets of every experience, every few steps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor

from clframe.config.registry import MONITORS
from clframe.core.monitor import Monitor
from clframe.data.stream import TensorData
from clframe.evaluation.curve import Curve
from clframe.evaluation.evaluate import concat_segments, evaluation_mode, segment_scores
from clframe.run.distributed import is_main_rank

if TYPE_CHECKING:
    from clframe.core.module import CLModule
    from clframe.core.strategy import StepContext


@MONITORS.register("continual")
class ContinualEvaluator(Monitor):
    """Evaluate every ``every`` steps, at every experience end, and once before training.

    Each experience's subset is drawn once from its eval data with a fixed seed and
    cached on the model's device; an evaluation concatenates the subsets of the evaluated
    experiences and runs a few large forward passes in inference mode. Results stay on
    the device and reach the host in one transfer per ``flush_every`` evaluations (and at
    each experience end), so evaluating does not sync the host every step. The model is
    put in eval mode (dropout off, BatchNorm statistics untouched) and the RNG state is
    restored afterwards, so training proceeds exactly as without the evaluator.

    After every evaluation it sends the event ``on_evaluation(module, step, experience, scores)``
    (the score on each experience [T], a device tensor; a curriculum reads its learner's progress
    this way), and ``on_records`` with the rows for metrics.csv when they reach the host. Its
    ``curve`` is the one the run's curve metrics (min-ACC, WC-ACC, the stability gap) and
    ``plots/accuracy_curves.png`` come from; without this monitor, the boundary evaluations' are.

    Args:
        every: evaluate every this many optimizer steps (default 10).
        subset: samples per experience (default 1000; all of them if fewer).
        on: ``seen`` (experiences trained so far, including the current one) or ``all`` (default
            ``seen``).
        seed: seed of the subset draw (default 0; the config sets the run's seed).
        flush_every: evaluations kept on the device before one host transfer (default 100).
        batch_size: samples per forward pass; None: ``eval.batch_size`` (default None).
    """

    enabled_by_default = True

    def __init__(
        self,
        every: Annotated[int, Ge(1)] = 10,
        subset: Annotated[int, Ge(1)] = 1000,
        on: Literal["seen", "all"] = "seen",
        seed: int = 0,
        flush_every: Annotated[int, Ge(1)] = 100,
        batch_size: Annotated[int, Ge(1)] | None = None,
    ) -> None:
        self.every, self.subset, self.on, self.batch_size = every, subset, on, batch_size
        self.seed, self.flush_every = seed, flush_every
        self.steps: list[int] = []
        self.experiences: list[int] = []
        self.acc: list[list[float]] = []
        self.loss: list[list[float]] = []
        self._pending: list[tuple[int, int, Tensor]] = []
        self._cache: dict[str, Any] = {}
        self._module: CLModule | None = None
        self._resumed = False
        self._active = True

    # -- data --------------------------------------------------------------
    def _subsets(self, module: CLModule) -> None:
        xs, ys, ts = [], [], []
        for e in module.stream:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + e.index)
            idx = torch.randperm(len(e.eval), generator=g)[: self.subset].to(e.eval.y.device)
            xs.append(e.eval.x[idx].to(module.device))
            ys.append(e.eval.y[idx].to(module.device))
            ts.append(e.eval.t[idx].to(module.device))
        self._cache = {"x": xs, "y": ys, "t": ts, "key": None}

    def _eval_set(self, n_eval: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # the concatenated set changes only when a new experience is seen
        c = self._cache
        if c["key"] != n_eval:
            subsets = [TensorData(x, y, t) for x, y, t in zip(c["x"][:n_eval], c["y"][:n_eval], c["t"][:n_eval])]
            c.update(key=n_eval, cat=concat_segments(subsets))
        return c["cat"]

    # -- evaluation --------------------------------------------------------
    def evaluate(self, module: CLModule) -> None:
        """Record one evaluation at the module's current step (device-side, no host sync)."""
        n_total = len(module.stream)
        n_eval = n_total if self.on == "all" else min(max(module.current_exp, 0) + 1, n_total)
        with evaluation_mode(module.eval_target()) as model:
            scores = segment_scores(model, *self._eval_set(n_eval), n_eval, self.batch_size,
                                    module.objective)  # [2, n_eval]
        # unevaluated experiences are NaN; the row keeps its width so evaluations stack
        out = F.pad(scores, (0, n_total - n_eval), value=float("nan"))
        self._pending.append((module.cl_step, module.current_exp, out))
        module.emit("on_evaluation", module, module.cl_step, module.current_exp, out[0])
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Move pending evaluations to the host (one transfer) and send them as ``on_records``."""
        if not self._pending:
            return
        values = torch.stack([p[2] for p in self._pending]).cpu().numpy()  # [P, 2, T]
        rows = []
        for (step, exp, _), v in zip(self._pending, values):
            self.steps.append(step)
            self.experiences.append(exp)
            self.acc.append(v[0].tolist())
            self.loss.append(v[1].tolist())
            rows += [{"step": step, "experience": exp, "eval_experience": j, "acc": float(v[0, j]),
                      "loss": float(v[1, j]), "kind": "continual"} for j in range(v.shape[1]) if not np.isnan(v[0, j])]
        self._pending = []
        if self._module is not None:
            self._module.emit("on_records", self._module, rows)

    def curve(self, module: CLModule) -> Curve:
        """The recorded curve (flushes first)."""
        self.flush()
        return Curve(self.steps, self.experiences, np.array(self.acc).reshape(len(self.steps), -1),
                     module.boundaries)

    def _last_step(self) -> int:
        return self._pending[-1][0] if self._pending else (self.steps[-1] if self.steps else -1)

    # -- events ------------------------------------------------------------
    def setup(self, module: CLModule) -> None:
        # under multi-process training the weights are the same on every rank: rank 0 evaluates alone
        self._active = is_main_rank()
        if not self._active:
            return
        if self.batch_size is None:
            self.batch_size = module.eval_batch_size
        self._module = module
        self._subsets(module)
        if not self._resumed:
            self.evaluate(module)  # step 0, before any training: experience -1

    def on_step_end(self, ctx: StepContext) -> None:
        if self._active and ctx.module.cl_step % self.every == 0:
            self.evaluate(ctx.module)

    def on_boundary_eval(self, module: CLModule, experience: int, rows: list[dict[str, Any]]) -> None:
        if not self._active:
            return
        if self._last_step() != module.cl_step:
            self.evaluate(module)
        self.flush()

    def on_train_end(self, module: CLModule) -> None:
        self.flush()

    # -- checkpoints ------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The recorded curve (flushes first)."""
        self.flush()
        return {"steps": self.steps, "experiences": self.experiences, "acc": self.acc, "loss": self.loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a recorded curve; the evaluation before training is then not repeated."""
        self.steps, self.experiences = list(state["steps"]), list(state["experiences"])
        self.acc, self.loss = [list(r) for r in state["acc"]], [list(r) for r in state["loss"]]
        self._resumed = True
