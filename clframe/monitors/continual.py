"""The continual evaluator: accuracy on fixed subsets of every experience, every few steps."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor

from clframe.config.registry import MONITORS
from clframe.core.monitor import Monitor, RunContext
from clframe.data.stream import TensorData
from clframe.evaluation.budget import EvalBudget, clock
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

    With ``eval.budget`` set (a fraction, e.g. 0.2) it picks its period so that its evaluations take
    at most that fraction of the training steps' time (``EvalBudget``; ``every`` is then the smallest
    period); the evaluations before training and at experience ends always happen and count against
    the budget. After an experience switch the first evaluation comes half a period in (the stability
    gap is early), and one due less than half a period before an experience's end is left to the
    end's. It times with the host clock around each evaluation and over the steps between (less the
    time of other evaluations, the accuracy matrix; checkpoint writes count as steps); on CUDA each
    timing point synchronizes, at evaluation points only, never per step. Which steps are evaluated
    then depends on the machine's timing, so it is not reproducible; training is (the evaluator
    restores the RNG state). Its summary entry ``continual_budget`` holds the evaluations, the last
    period and the seconds it measured.

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
        self._budget: EvalBudget | None = None
        self._period = every  # steps from one evaluation to the next under a budget
        self._next = every  # the step of the next evaluation under a budget
        # (host s, evaluation s, step) after the last timing; the step is None until known after a resume
        self._mark: tuple[float, float, int | None] | None = None

    def attach(self, run: RunContext) -> bool:
        """Takes ``eval.budget`` from the run's config (None: evaluate every ``every`` steps)."""
        budget = run.config.get("eval", {}).get("budget")
        self._budget = None if budget is None else EvalBudget(budget, self.every)
        return True

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
    def _n_eval(self, module: CLModule) -> int:
        n_total = len(module.stream)
        return n_total if self.on == "all" else min(max(module.current_exp, 0) + 1, n_total)

    def evaluate(self, module: CLModule) -> None:
        """Record one evaluation at the module's current step (device-side, no host sync)."""
        n_total, n_eval = len(module.stream), self._n_eval(module)
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

    def _samples(self, n_eval: int) -> int:
        return sum(len(y) for y in self._cache["y"][:n_eval])

    def _end_is_near(self, module: CLModule) -> bool:
        # the experience-end evaluation always happens: one due less than half a period before it is left to it
        end = module.exp_start_step + module.steps_per_experience[module.current_exp]
        return end - module.cl_step < self._period / 2

    def _evaluate(self, module: CLModule, at_end: bool = False) -> None:
        """Evaluate; under a budget, also time the steps since the last evaluation and this one, and
        set the period to the next (``at_end``: this is an experience's last evaluation, so the next
        evaluates one experience more under ``on=seen``; default False)."""
        if self._budget is None:
            self.evaluate(module)
            return
        start, others = clock(module)
        if self._mark is not None:
            # the steps' time: the host time since the last evaluation less other evaluations' (the matrix)
            t, ev, step = self._mark
            if step is not None:
                self._budget.record_steps(start - t - (others - ev), module.cl_step - step)
        n_eval = self._n_eval(module)
        self.evaluate(module)
        end, others = clock(module)
        self._budget.record_evaluation(end - start, self._samples(n_eval))
        self._mark = (end, others, module.cl_step)
        grows = at_end and self.on == "seen" and module.current_exp >= 0
        self._period = self._budget.period(self._samples(n_eval + grows))
        # after a switch the first evaluation comes half a period in: the stability gap is early
        wait = max(self.every, math.ceil(self._period / 2)) if at_end else self._period
        self._next = module.cl_step + wait

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
            self._evaluate(module)  # step 0, before any training: experience -1
        elif self._budget is not None:
            # the module's step is restored after the monitors' setup: the first step end gives it
            self._mark = (*clock(module), None)

    def on_step_end(self, ctx: StepContext) -> None:
        if not self._active:
            return
        step = ctx.module.cl_step
        if self._budget is None:
            if step % self.every == 0:
                self.evaluate(ctx.module)
        else:
            if self._mark is not None and self._mark[2] is None:
                self._mark = (self._mark[0], self._mark[1], step - 1)
            if step >= self._next and not self._end_is_near(ctx.module):
                self._evaluate(ctx.module)

    def on_boundary_eval(self, module: CLModule, experience: int, rows: list[dict[str, Any]]) -> None:
        if not self._active:
            return
        if self._last_step() != module.cl_step:
            self._evaluate(module, at_end=True)
        self.flush()

    def on_train_end(self, module: CLModule) -> None:
        self.flush()

    def summary(self, module: CLModule) -> dict[str, Any]:
        """Under a budget, ``continual_budget``: the budget, the evaluations, the last period and the
        seconds measured (the evaluator's evaluations, the steps'; since the run or its resumption)."""
        b = self._budget
        if b is None or not self._active:
            return {}
        return {"continual_budget": {"budget": b.fraction, "evaluations": len(self.steps) + len(self._pending),
                                     "last_period": self._period, "eval_s": b.spent, "steps_s": b.trained}}

    def on_log_flush(self, module: CLModule) -> None:
        if self._active:
            self.flush()  # with a logger on: the queued evaluations reach wandb before later steps do

    # -- checkpoints ------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The recorded curve (flushes first) and, under a budget, its measurements and period."""
        self.flush()
        state = {"steps": self.steps, "experiences": self.experiences, "acc": self.acc, "loss": self.loss}
        if self._budget is not None:
            state["budget"] = {**self._budget.state_dict(), "period": self._period, "next": self._next}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a recorded curve (and a budget's period); the evaluation before training is then not
        repeated."""
        self.steps, self.experiences = list(state["steps"]), list(state["experiences"])
        self.acc, self.loss = [list(r) for r in state["acc"]], [list(r) for r in state["loss"]]
        self._resumed = True
        # a budget's measurements and period continue (a checkpoint without them: the period starts at every)
        if self._budget is not None and "budget" in state:
            self._budget.load_state_dict(state["budget"])
            self._period, self._next = state["budget"]["period"], state["budget"]["next"]
