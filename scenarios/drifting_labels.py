"""Continual in-context learning: the class -> label mapping drifts within a sequence.

Sequences are built like those of ``scenarios.fewshot_sequences`` (``n_way`` classes per sequence,
each mapped to a label by a permutation of its own, the previous step's label fed back as input),
but they are ``length`` steps long and at ``n_switches`` random steps the mapping changes: two
labels swap (``drift="swap"``) or the whole permutation is drawn again (``drift="redraw"``). Nothing
in the input marks a switch: the learner has to notice it from the feedback and learn again, in
context. Same stream as ``fewshot_sequences``: experiences over disjoint groups of classes, held-out
classes' episodes in ``experience.info["heldout_eval"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from annotated_types import Ge
from clframe.scenarios.fewshot_sequences import check_stream, episode_stream
from torch import Tensor

from clframe.config.registry import SCENARIOS, ParamError
from clframe.data.stream import Scenario

DRIFTS = ("swap", "redraw")


@dataclass
class Drift:
    """How the labels of a batch of sequences drift.

    Args:
        slots: which of its sequence's classes each step shows [N, T].
        labels: the label of each step [N, T].
        switches: the steps at which each sequence's mapping changes [N, n_switches], increasing.
        mappings: each sequence's class-slot -> label mapping before the first switch and after
            each one [N, n_switches + 1, n_way].
    """

    slots: Tensor
    labels: Tensor
    switches: Tensor
    mappings: Tensor


def _changed(new: Tensor, old: Tensor) -> Tensor:
    return (new != old).any(-1)


def drift_labels(n: int, n_way: int, length: int, n_switches: int, drift: str, g: torch.Generator) -> Drift:
    """Draw the steps and the drifting labels of ``n`` sequences.

    Each class slot occurs ``length // n_way`` or one more times, in random order. The switch
    steps are distinct and uniform in ``[1, length)``; the mapping from the switch on is the previous
    one with two labels swapped (``swap``), or a fresh permutation that differs from it (``redraw``).
    """
    slots = (torch.arange(length) % n_way)[torch.rand(n, length, generator=g).argsort(1)]
    switches = (torch.rand(n, length - 1, generator=g).argsort(1)[:, :n_switches] + 1).sort(1).values
    mappings = [torch.arange(n_way).expand(n, n_way)]  # the drawn classes' random order is the first permutation
    for _ in range(n_switches):
        old = mappings[-1]
        if drift == "swap":
            a = torch.randint(n_way, (n, 1), generator=g)
            b = (a + torch.randint(1, n_way, (n, 1), generator=g)) % n_way
            new = old.clone()
            new.scatter_(1, a, old.gather(1, b))
            new.scatter_(1, b, old.gather(1, a))
        else:
            new = old.gather(1, torch.rand(n, n_way, generator=g).argsort(1))
            same = ~_changed(new, old)
            while same.any():  # a redraw always changes the mapping (rare: probability 1 / n_way!)
                new[same] = old[same].gather(1, torch.rand(int(same.sum()), n_way, generator=g).argsort(1))
                same = ~_changed(new, old)
        mappings.append(new)
    maps = torch.stack(mappings, 1)  # [N, n_switches + 1, n_way]
    segment = (torch.arange(length).view(1, 1, -1) >= switches.unsqueeze(-1)).sum(1)  # [N, T]
    labels = maps.gather(1, segment.unsqueeze(-1).expand(-1, -1, n_way)).gather(2, slots.unsqueeze(-1)).squeeze(-1)
    return Drift(slots, labels, switches, maps)


@SCENARIOS.register("drifting_labels")
def drifting_labels(
    dataset: Literal["digits", "mnist1d"] = "digits",
    n_experiences: Annotated[int, Ge(1)] = 2,
    n_way: Annotated[int, Ge(2)] = 3,
    length: int = 60,
    n_switches: Annotated[int, Ge(0)] = 2,
    drift: Literal["swap", "redraw"] = "swap",
    n_train_episodes: Annotated[int, Ge(1)] = 2000,
    n_eval_episodes: Annotated[int, Ge(1)] = 200,
    heldout_classes: Annotated[int, Ge(0)] = 3,
    first_shot_ignored: bool = True,
    seed: int = 0,
) -> Scenario:
    """Sequences of ``length`` steps over ``n_way`` classes whose labels change ``n_switches`` times.

    Inputs [N, length, F + n_way + 1] and labels [N, length] as in ``fewshot_sequences`` (the
    example, the previous step's label one-hot, the valid-step channel), ``n_classes = n_way``.
    The classes' order and grouping, ``info["dataset_classes"]`` and ``info["heldout_eval"]`` are
    as there too.

    Args:
        dataset: ``digits`` or ``mnist1d`` (default ``digits``).
        n_experiences: experiences, over disjoint groups of classes (default 2).
        n_way: classes per sequence; at most the classes of every experience (default 3).
        length: steps per sequence, at least ``2 * n_way``; each class occurs about ``length / n_way``
            times (default 60).
        n_switches: steps, distinct and uniform in ``[1, length)``, from which the mapping changes;
            not marked in the input (default 2).
        drift: ``swap``: two labels trade places; ``redraw``: a new permutation, different from the
            last (default ``swap``).
        n_train_episodes: training sequences per experience, from the dataset's train images (default 2000).
        n_eval_episodes: eval sequences per experience and held-out sequences, from its test images (default 200).
        heldout_classes: classes in no experience, 0 or at least ``n_way`` (default 3).
        first_shot_ignored: label each class's first occurrence in a sequence ``IGNORE`` (-100, not
            scored). Occurrences right after a switch are scored: noticing the change is the task
            (default True).
        seed: seed of the sequences (default 0).
    """
    check_stream(dataset, n_experiences, n_way, heldout_classes, n_train_episodes, n_eval_episodes)
    if drift not in DRIFTS:
        raise ParamError("drift", f"must be one of {', '.join(DRIFTS)}, got '{drift}'")
    if length < 2 * n_way:
        raise ParamError("length", f"must be >= 2 * n_way = {2 * n_way}, got {length}",
                         "Every class needs to occur at least twice in a sequence.")
    if not 0 <= n_switches < length:
        raise ParamError("n_switches", f"must be in [0, length - 1 = {length - 1}], got {n_switches}")

    def steps(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        d = drift_labels(n, n_way, length, n_switches, drift, g)
        return d.slots, d.labels

    return episode_stream(dataset, n_experiences, n_way, heldout_classes, n_train_episodes, n_eval_episodes,
                          first_shot_ignored, seed, steps,
                          f"drifting-labels-{dataset} ({n_way}-way, {length} steps, {n_switches} {drift} switches, "
                          f"{n_experiences} experiences)")
