"""Learning-rate schedules for continual training: re-warm + re-decay per experience, the
infinite schedule (warm-up, cooldown, constant, optional final anneal), or a constant factor.

Every factor is a multiplier of the base learning rate ``train.lr`` (the peak, factor 1.0).
The module applies the product of all strategies' factors before every optimizer step, with
``step`` the global step and ``step_in_experience`` the step within the experience, both from 0.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval

from clframe.config.registry import STRATEGIES, ParamError
from clframe.core.strategy import Strategy


def cosine(x: float, start: float, end: float) -> float:
    """Half-cosine from ``start`` at ``x = 0`` to ``end`` at ``x = 1`` (``x`` is clamped to [0, 1])."""
    x = min(max(x, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * x))


def inv_sqrt(x: float, start: float, end: float, a: float = 10.0) -> float:
    """Inverse-sqrt cooldown ``start + (end - start) h(x) / h(1)`` with ``h(x) = 1/sqrt(1 + a x) - 1``:
    ``start`` at ``x = 0``, ``end`` at ``x = 1`` (``x`` is clamped to [0, 1]; ``a``, default 10, sets how
    early it drops)."""
    x = min(max(x, 0.0), 1.0)
    h = 1.0 / math.sqrt(1.0 + a * x) - 1.0
    return start + (end - start) * h / (1.0 / math.sqrt(1.0 + a) - 1.0)


def rewarm_factor(step_in_exp: int, exp_steps: int, warmup_fraction: float = 0.01, warmup_start: float = 0.0,
                  floor: float = 0.1) -> float:
    """The re-warm + re-decay factor at step ``step_in_exp`` (from 0) of an experience of ``exp_steps`` steps.

    Linear warm-up over ``W = floor(warmup_fraction * exp_steps + 0.5)`` steps (default 1%) from ``warmup_start``
    (default 0.0) to 1.0 at ``W``, then a cosine from 1.0 to ``floor`` (default 0.1) at the last step
    ``exp_steps - 1``. An experience with no step left to decay over stays at 1.0 after the warm-up.
    """
    w = math.floor(warmup_fraction * exp_steps + 0.5)
    if step_in_exp < w:
        return warmup_start + (1.0 - warmup_start) * step_in_exp / w
    decay = exp_steps - 1 - w
    return 1.0 if decay <= 0 else cosine((step_in_exp - w) / decay, 1.0, floor)


def infinite_factor(step: int, warmup_steps: int = 100, cooldown_steps: int = 1000, constant: float = 0.1,
                    cooldown: Literal["cosine", "inv_sqrt"] = "cosine", inv_sqrt_a: float = 10.0,
                    warmup_start: float = 0.0, anneal_steps: int = 0, anneal_to: float = 0.01,
                    total_steps: int | None = None) -> float:
    """The infinite-schedule factor at global step ``step`` (from 0); it never restarts.

    Warm-up ``warmup_start + (1 - warmup_start) step / warmup_steps`` for ``step < warmup_steps``; cooldown
    from 1.0 to ``constant`` over the next ``cooldown_steps`` steps (``cosine`` or ``inv_sqrt``, see
    ``inv_sqrt``, at ``x = (step - warmup_steps) / cooldown_steps``); ``constant`` afterwards. With
    ``anneal_steps > 0`` and ``total_steps`` known, the last ``anneal_steps`` steps decay exponentially:
    ``f = base^(1 - y) * anneal_to^y`` with ``y = (step - (total_steps - anneal_steps) + 1) / anneal_steps``,
    so from the constant it falls by ``(anneal_to / constant)^(1 / anneal_steps)`` a step and reaches
    ``anneal_to`` at the last step.
    """
    if step < warmup_steps:
        base = warmup_start + (1.0 - warmup_start) * step / warmup_steps
    elif cooldown_steps <= 0 or step >= warmup_steps + cooldown_steps:
        base = constant
    else:
        x = (step - warmup_steps) / cooldown_steps
        base = cosine(x, 1.0, constant) if cooldown == "cosine" else inv_sqrt(x, 1.0, constant, inv_sqrt_a)
    if anneal_steps <= 0 or total_steps is None or step < total_steps - anneal_steps:
        return base
    y = min((step - (total_steps - anneal_steps) + 1) / anneal_steps, 1.0)
    return base ** (1.0 - y) * anneal_to**y


@STRATEGIES.register("lr_schedule")
class LRSchedule(Strategy):
    """Scale the learning rate by a schedule; every factor multiplies ``train.lr`` (1.0 is the peak).

    Args:
        schedule: ``rewarm`` (warm-up and cosine re-decay restarted at every experience; also on
            boundary-free streams, where the experience comes from the batches), ``infinite``
            (one warm-up and cooldown to a constant kept through every later experience, no re-warm)
            or ``constant`` (default ``rewarm``).
        warmup_fraction: rewarm: warm-up length as a fraction of each experience's steps (default 0.01).
        warmup_start: rewarm and infinite: factor at the first warm-up step (default 0.0).
        floor: rewarm: factor at the last step of each experience (default 0.1).
        warmup_steps: infinite: warm-up length in global steps (default 100).
        cooldown_steps: infinite: cooldown length in steps (default 1000).
        cooldown: infinite: ``cosine`` or ``inv_sqrt`` (``1/sqrt(1 + a x) - 1`` rescaled) (default ``cosine``).
        inv_sqrt_a: infinite: the ``a`` of the inverse-sqrt cooldown (default 10.0).
        constant: infinite: the factor after the cooldown (default 0.1); constant: the factor
            throughout (default 1.0).
        anneal_steps: infinite: exponential anneal over the last this many steps of the whole
            stream; 0 turns it off (default 0).
        anneal_to: infinite: the factor the anneal reaches at the last step, > 0 (default 0.01).

    It keeps no state: the total step count is read from the module in ``setup``.
    """

    def __init__(
        self,
        schedule: Literal["rewarm", "infinite", "constant"] = "rewarm",
        warmup_fraction: Annotated[float, Interval(ge=0, le=1)] = 0.01,
        warmup_start: Annotated[float, Ge(0)] = 0.0,
        floor: Annotated[float, Ge(0)] = 0.1,
        warmup_steps: Annotated[int, Ge(0)] = 100,
        cooldown_steps: Annotated[int, Ge(0)] = 1000,
        cooldown: Literal["cosine", "inv_sqrt"] = "cosine",
        inv_sqrt_a: Annotated[float, Gt(0)] = 10.0,
        constant: Annotated[float, Ge(0)] | None = None,
        anneal_steps: Annotated[int, Ge(0)] = 0,
        anneal_to: Annotated[float, Gt(0)] = 0.01,
    ) -> None:
        if not 0.0 <= warmup_fraction <= 1.0:
            raise ParamError("warmup_fraction", f"must be in [0, 1], got {warmup_fraction}",
                             "Set it to the fraction of each experience's steps to warm up over (default 0.01).")
        for name, value in (("warmup_steps", warmup_steps), ("cooldown_steps", cooldown_steps),
                            ("anneal_steps", anneal_steps)):
            if value < 0:
                raise ParamError(name, f"must be >= 0, got {value}", "Set it to a number of steps (0 for none).")
        if anneal_to <= 0:
            raise ParamError("anneal_to", f"must be > 0 for an exponential anneal, got {anneal_to}",
                             "Set it to a small positive factor of train.lr, e.g. 0.01.")
        self.schedule, self.warmup_fraction, self.warmup_start, self.floor = (schedule, warmup_fraction,
                                                                              warmup_start, floor)
        self.warmup_steps, self.cooldown_steps = warmup_steps, cooldown_steps
        self.cooldown, self.inv_sqrt_a = cooldown, inv_sqrt_a
        self.constant = constant if constant is not None else (1.0 if schedule == "constant" else 0.1)
        self.anneal_steps, self.anneal_to = anneal_steps, anneal_to
        self.total_steps: int | None = None

    def setup(self, module: Any) -> None:
        self.total_steps = sum(module.steps_per_experience)

    def lr_factor(self, step: int, experience: int, step_in_experience: int, experience_steps: int) -> float:
        if self.schedule == "rewarm":
            return rewarm_factor(step_in_experience, experience_steps, self.warmup_fraction, self.warmup_start,
                                 self.floor)
        if self.schedule == "infinite":
            return infinite_factor(step, self.warmup_steps, self.cooldown_steps, self.constant, self.cooldown,
                                   self.inv_sqrt_a, self.warmup_start, self.anneal_steps, self.anneal_to,
                                   self.total_steps)
        return self.constant
