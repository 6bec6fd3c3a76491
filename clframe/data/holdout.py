"""Tuning streams: a validation split held out of each experience's training data, and the first
experiences of a stream alone (``scenario.validation``, ``scenario.first_experiences``).

With a validation split the experiences' evaluation data *is* the validation set: every evaluator,
metric and comparison scores on it, and the test data is dropped before the stream exists, so no run
that tunes can see it (``clframe tune``; docs/methods/tuning.md)."""

from __future__ import annotations

from typing import Any

import torch

from clframe.data.stream import Scenario, TensorData
from clframe.errors import ConfigError

SEED = 0  # the split is the same in every run and seed: trials compare on one validation set


def holdout_problem(validation: Any, first: Any) -> str | None:
    """What is wrong with ``scenario.validation`` / ``scenario.first_experiences``, or None."""
    if isinstance(validation, bool) or not isinstance(validation, int | float) or not 0 <= validation < 1:
        return (f"'scenario.validation' is the fraction of each experience's training data held out for "
                f"validation, in [0, 1) (0: none), got {validation!r}.")
    if first is not None and (isinstance(first, bool) or not isinstance(first, int) or first < 1):
        return f"'scenario.first_experiences' must be null (the whole stream) or an int >= 1, got {first!r}."
    return None


def first_experiences(scenario: Scenario, k: int) -> Scenario:
    """The stream cut to its first ``k`` experiences (in place)."""
    if k < len(scenario.stream):
        scenario.stream.experiences = scenario.stream.experiences[:k]
        scenario.name += f" (first {k} experiences)"
    return scenario


def hold_out(scenario: Scenario, fraction: float) -> Scenario:
    """Each experience's training data split by a fixed-seed shuffle: ``fraction`` of it (at least one
    sample) becomes the experience's evaluation data, the rest trains; the test data is dropped (in place)."""
    if fraction <= 0:
        return scenario
    if any(e.info.get("cumulative") for e in scenario.stream):
        raise ConfigError("scenario.validation cannot split a cumulative stream: experience i's training data "
                          "holds experiences 0..i-1's, so their validation samples would be trained on. Tune "
                          "without scenario.cumulative (or strategy=cumulative).")
    for e in scenario.stream:
        n = len(e.train)
        if n < 2:
            raise ConfigError(f"scenario.validation={fraction}: experience {e.index} has {n} training sample(s), "
                              "too few to hold any out.")
        g = torch.Generator().manual_seed(SEED * 1_000_003 + e.index)
        perm = torch.randperm(n, generator=g).to(e.train.y.device)
        k = min(max(1, round(fraction * n)), n - 1)
        val, train = e.train.subset(perm[:k]), e.train.subset(perm[k:])
        e.train, e.eval = train, TensorData(val.x, val.y, val.t)
        e.info["scored_on"] = "validation"
    scenario.name += f" (validation {fraction:g} of the training data; test data dropped)"
    return scenario


def scored_on(scenario: Scenario) -> str:
    """``validation`` if the scenario's evaluation data is a held-out validation split, else ``test``."""
    return "validation" if any(e.info.get("scored_on") == "validation" for e in scenario.stream) else "test"
