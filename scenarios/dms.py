"""N-delayed match-to-sample curriculum: does bit T - N + 1 equal the last bit T?"""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Ge, Interval
from clframe.scenarios._memory_tasks import memory_scenario

from clframe.config.registry import SCENARIOS
from clframe.data.stream import Scenario


@SCENARIOS.register("dms")
def dms(
    n_min: Annotated[int, Ge(1)] = 2,
    n_max: Annotated[int, Ge(1)] = 8,
    curriculum: Literal["single", "multi", "sliding"] = "single",
    window: Annotated[int, Ge(1)] = 2,
    lengths: Literal["final", "level"] = "final",
    threshold: Annotated[float, Interval(gt=0, le=1)] = 0.98,
    max_steps_per_level: Annotated[int, Ge(1)] = 20000,
    eval_samples: Annotated[int, Ge(1)] = 2000,
    train_samples: Annotated[int, Ge(1)] = 1024,
    seed: int = 0,
) -> Scenario:
    """N-DMS for N = ``n_min`` .. ``n_max``, one experience per N, advanced by the learner's scores.

    Bits are Bernoulli(1/2); the label is 1 when bit T - N + 1 equals the last bit T.
    A level is solved when, at a continual evaluation (``monitors.continual.every``), the score on every experience
    the criterion covers and their mean pass ``threshold``.

    Args: those of ``parity`` (the same names, defaults and meaning).
    """
    return memory_scenario("dms", n_min, n_max, curriculum, window, lengths, threshold, max_steps_per_level,
                           eval_samples, train_samples, seed)
