"""N-parity curriculum: the label is the parity of a sequence's last N bits."""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Ge, Interval
from clframe.scenarios._memory_tasks import memory_scenario

from clframe.config.registry import SCENARIOS
from clframe.data.stream import Scenario


@SCENARIOS.register("parity")
def parity(
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
    """N-parity for N = ``n_min`` .. ``n_max``, one experience per N, advanced by the learner's scores.

    Bits are Bernoulli(p) with p ~ U(0, 1) per sequence; the label is the sum of the last N bits mod 2.
    A level is solved when, at a continual evaluation (``monitors.continual.every``), the score on every experience
    the criterion covers and their mean pass ``threshold``.

    Args:
        n_min: first N (default 2).
        n_max: last N (default 8).
        curriculum: ``single``: one head (``head=linear``), trained on N, then N + 1; ``multi``: a head
            per N (``head=multihead``), all heads so far trained on the summed loss; ``sliding``: a head
            per N, only the last ``window`` trained (default ``single``).
        window: heads trained at once by ``sliding`` (default 2).
        lengths: sequence lengths uniform in ``[M + 2, 4 M + 2)`` with M = ``n_max`` for every level
            (``final``), or the largest N trained at the level (``level``, the reference code's choice)
            (default ``final``).
        threshold: accuracy a level must pass, in (0, 1] (default 0.98).
        max_steps_per_level: steps after which an unsolved level ends the run (default 20000).
        eval_samples: fixed eval sequences per N (default 2000).
        train_samples: fixed training sequences per N kept for strategies that read experience data
            (EWC's Fisher); training batches are drawn fresh (default 1024).
        seed: seed of the fixed sequences (default 0); training batches follow the run's seed.
    """
    return memory_scenario("parity", n_min, n_max, curriculum, window, lengths, threshold, max_steps_per_level,
                           eval_samples, train_samples, seed)
