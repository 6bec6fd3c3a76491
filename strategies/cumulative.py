"""Cumulative training, the incremental upper bound: each experience trains on all data seen so far."""

from __future__ import annotations

from typing import Any

from clframe.config.registry import STRATEGIES
from clframe.core.strategy import Strategy
from clframe.errors import ConfigError


@STRATEGIES.register("cumulative")
class Cumulative(Strategy):
    """Experience ``i`` trains on the concatenation of the training data of experiences ``0..i``, with
    the run's epochs and batch size over that bigger set, from the weights experience ``i - 1`` ended
    with: Avalanche 0.6's ``Cumulative`` (``avalanche/training/supervised/cumulative.py``, whose
    ``train_dataset_adaptation`` concatenates every experience's dataset so far), the "cumulative" /
    "joint incremental" upper bound of the class-incremental literature (e.g. van de Ven & Tolias 2019;
    Lomonaco et al. 2021, Avalanche).

    The union must be the scenario's own training data, because the number of optimizer steps of
    experience ``i`` is ``epochs * ceil(|D_0 + ... + D_i| / batch_size)``, and the steps are fixed by
    the scenario before any strategy runs. ``scenario.cumulative=true`` (``split``, ``rotated``) builds
    that stream (``clframe.scenarios._common.make_cumulative``); this strategy checks that it is there
    and refuses a stream that is not, instead of approximating the union with replayed samples inside
    each experience's smaller number of steps (that would be replay with an unbounded buffer, not
    Cumulative). On a cumulative stream nothing else is needed: the training step is naive's.

    Args: none.
    """

    def setup(self, module: Any) -> None:
        # the first experience is its own union; a stream of one experience is trivially cumulative
        plain = [e.index for e in module.stream if e.index > 0 and not e.info.get("cumulative")]
        if plain:
            raise ConfigError(
                f"strategy=cumulative needs a cumulative stream, but experiences {plain} hold only their own "
                "training data. Cumulative (Avalanche's) trains experience i on the union of experiences 0..i "
                "with the same epochs and batch size, so experience i takes epochs * |union| / batch_size "
                "steps; those steps come from the scenario's data, which a strategy cannot change. Set "
                "scenario.cumulative=true (split and rotated provide it; a scenario of your own builds the "
                "union and marks each experience with info['cumulative']=True), or use strategy=joint for "
                "the offline upper bound.")
