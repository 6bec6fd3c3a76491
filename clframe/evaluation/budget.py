"""The continual evaluator's period under a time budget (``eval.budget``): ``EvalBudget`` and the clock
it reads at evaluation points."""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import torch

from clframe.evaluation.evaluate import evaluation_seconds

if TYPE_CHECKING:
    from clframe.core.module import CLModule


def clock(module: CLModule) -> tuple[float, float]:
    """Host seconds now and the seconds spent inside ``evaluation_mode`` so far. On CUDA it first
    waits for the queued work (a synchronize), so that the steps and the evaluation each get their own
    GPU time; it is read at evaluation points only, never per step."""
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)
    return time.perf_counter(), evaluation_seconds()


class EvalBudget:
    """The continual evaluator's period under a time budget: its evaluations take at most ``fraction``
    of the training steps' time.

    It is told the seconds of each evaluation (and its samples) and of the training steps between
    evaluations. With ``s`` the median seconds per step and ``e`` the predicted seconds of the next
    evaluation (its samples times the median seconds per sample), evaluating every ``P = e / (fraction
    * s)`` steps spends ``fraction`` of the steps' time. ``P`` is lengthened to repay evaluation time
    spent over the budget so far (the evaluations before training and at experience ends, which always
    happen; a slow evaluation) or shortened to use time left under it, within ``[P/2, 2P]``, and is
    never below ``every``. The medians (of the last ``window`` measurements) keep one slow evaluation
    from stalling the curve.

    Args:
        fraction: evaluation seconds allowed per second of training steps, in (0, 1].
        every: the smallest period in steps (default 1).
        window: measurements each median is taken over (default 5).
    """

    def __init__(self, fraction: float, every: int = 1, window: int = 5) -> None:
        self.fraction, self.every = fraction, every
        self.step_s: deque[float] = deque(maxlen=window)
        self.sample_s: deque[float] = deque(maxlen=window)
        self.spent = self.trained = 0.0

    def record_steps(self, seconds: float, steps: int) -> None:
        """``steps`` training steps took ``seconds`` (host time)."""
        if steps > 0:
            self.step_s.append(max(seconds, 0.0) / steps)
            self.trained += max(seconds, 0.0)

    def record_evaluation(self, seconds: float, samples: int) -> None:
        """An evaluation of ``samples`` samples took ``seconds`` (host time)."""
        self.sample_s.append(seconds / max(samples, 1))
        self.spent += seconds

    def period(self, samples: int) -> int:
        """Steps until the next evaluation, of ``samples`` samples; ``every`` until both a step and an
        evaluation have been timed."""
        if not self.step_s or not self.sample_s:
            return self.every
        step = statistics.median(self.step_s)
        if step <= 0:
            return self.every
        per_step = self.fraction * step  # evaluation seconds each training step pays for
        steady = statistics.median(self.sample_s) * samples / per_step
        debt = (self.spent - self.fraction * self.trained) / per_step
        p = min(max(steady + debt, steady / 2), 2 * steady)
        return max(self.every, math.ceil(p))

    def state_dict(self) -> dict[str, Any]:
        """The measurements (recent rates and the totals), for a checkpoint."""
        return {"step_s": list(self.step_s), "sample_s": list(self.sample_s), "spent": self.spent,
                "trained": self.trained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict``'s measurements."""
        self.step_s.clear()
        self.step_s.extend(state["step_s"])
        self.sample_s.clear()
        self.sample_s.extend(state["sample_s"])
        self.spent, self.trained = state["spent"], state["trained"]
