"""Curricula: streams whose next experience starts when the learner is ready.

A curriculum scenario sets ``Scenario.curriculum``. Its experiences are the levels (e.g. N = 2,
3, ... of N-parity), each with fixed eval data; training batches are drawn fresh from the current
level by ``Curriculum.sample``. The feedback from learner to stream is one documented hook: after
every continual evaluation the ``ContinualEvaluator`` calls ``Curriculum.observe(step,
experience, scores)`` with the score on each experience (one host transfer per evaluation), and
the curriculum decides whether to move on. The decision takes effect one batch later: a level
advanced at step ``s`` starts with batch ``s + 1``, so Lightning's Trainer (which has fetched
batch ``s`` already) and Fabric train the same batches, and a resumed run makes the same choices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from clframe.data.batch import Batch
from clframe.errors import ConfigError


class Curriculum:
    """Levels trained in order; a level ends when its criterion holds at an evaluation.

    Subclasses implement ``sample`` (a fresh training batch of a level) and may override
    ``criterion_experiences`` (whose scores must pass the threshold).

    Args:
        n_levels: number of levels (the scenario's experiences).
        threshold: score every criterion experience must pass, and their mean (default 0.98).
        max_steps_per_level: steps after which an unsolved level stops the run (default 20000).
    """

    def __init__(self, n_levels: int, threshold: float = 0.98, max_steps_per_level: int = 20000) -> None:
        self.n_levels, self.threshold, self.max_steps_per_level = n_levels, threshold, max_steps_per_level
        self.starts: list[int] = [0]  # the batch index at which each level began
        self.solved: list[int | None] = [None] * n_levels  # the step at which each level passed
        self.end: int | None = None  # the batch index at which training stops, once known

    @property
    def level(self) -> int:
        """The latest level started."""
        return len(self.starts) - 1

    def criterion_experiences(self, level: int) -> list[int]:
        """Experiences whose scores decide whether ``level`` is solved (default: ``level`` alone)."""
        return [level]

    def sample(self, level: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Batch:
        """A fresh training batch of ``level`` (``Batch.exp`` = ``level``)."""
        raise NotImplementedError

    def observe(self, step: int, experience: int, scores: Tensor) -> None:
        """The hook the continual evaluator calls after each evaluation.

        Args:
            step: optimizer steps taken so far.
            experience: the experience being trained (the evaluator's ``module.current_exp``).
            scores: [n] score on each of the first ``n`` experiences (NaN where not evaluated).
        """
        level = self.level
        if self.end is not None or experience != level or step < self.starts[level]:
            return  # an evaluation of an earlier level, e.g. at its boundary
        idx = self.criterion_experiences(level)
        if max(idx) >= len(scores):
            return
        values = scores[idx].tolist()
        if min(values) > self.threshold and sum(values) / len(values) > self.threshold:
            self.solved[level] = step
            if level + 1 < self.n_levels:
                self.starts.append(step + 1)
            else:
                self.end = step + 1

    def level_at(self, batch_index: int) -> int:
        """The level batch ``batch_index`` belongs to."""
        return sum(1 for s in self.starts[1:] if s <= batch_index)

    def done(self, batch_index: int) -> bool:
        """No batch ``batch_index``: the last level was solved, or the current one ran out of steps."""
        if self.end is not None:
            return batch_index >= self.end
        return batch_index - self.starts[-1] >= self.max_steps_per_level

    def summary(self, names: Sequence[Any] | None = None) -> dict[str, Any]:
        """When each level started and was solved (steps; ``None`` if not), keyed by level name."""
        names = list(names) if names is not None else list(range(self.n_levels))
        starts = self.starts + [None] * (self.n_levels - len(self.starts))
        solved = [n for n, s in zip(names, self.solved) if s is not None]
        return {"levels": names, "threshold": self.threshold,
                "start_step": dict(zip(map(str, names), starts)),
                "solved_step": dict(zip(map(str, names), self.solved)),
                "reached": solved[-1] if solved else None,
                "completed": self.solved[-1] is not None}

    def state_dict(self) -> dict[str, Any]:
        return {"starts": list(self.starts), "solved": list(self.solved), "end": self.end}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.starts, self.solved, self.end = list(state["starts"]), list(state["solved"]), state["end"]


class CurriculumIterator:
    """Fresh batches of the curriculum's current level until it is done; a drop-in for
    ``StreamIterator`` (resumable: batch ``i`` depends only on the seed, ``i`` and its level).

    Args:
        curriculum: the scenario's curriculum.
        batch_size: sequences per batch (a multi-head level repeats them once per trained head).
        device: where batches are generated (the scenario's device).
        seed: base seed of the per-batch generators (default 0).
    """

    rank, world_size = 0, 1

    def __init__(self, curriculum: Curriculum, batch_size: int, device: torch.device, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.curriculum, self.batch_size, self.device, self.seed = curriculum, batch_size, device, seed
        self.position = 0

    def steps_per_experience(self) -> list[int]:
        """The most steps each level may take (its actual length depends on the learner)."""
        return [self.curriculum.max_steps_per_level] * self.curriculum.n_levels

    def __len__(self) -> int:
        """Batches left at most."""
        return max(sum(self.steps_per_experience()) - self.position, 0)

    def __iter__(self) -> Iterator[Batch]:
        c = self.curriculum
        while not c.done(self.position):
            i = self.position
            g = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + i)
            self.position = i + 1
            yield c.sample(c.level_at(i), self.batch_size, g, self.device)

    def seek(self, consumed: int) -> None:
        """Continue after ``consumed`` batches (the curriculum's own state comes from the checkpoint)."""
        self.position = consumed

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


def check_curriculum_run(world_size: int, evaluates: bool, n_tasks: int, head: object) -> None:
    """``ConfigError`` for run settings a curriculum cannot work with.

    Args:
        world_size: number of processes.
        evaluates: whether the continual evaluator (``monitors.continual``) is on.
        n_tasks: the scenario's task labels.
        head: the model's head.
    """
    from clframe.models.protocols import MasksTaskClasses

    if n_tasks > 1 and not isinstance(head, MasksTaskClasses):
        raise ConfigError(f"This curriculum trains a head per level ({n_tasks} task labels), but the head ignores task "
                          "labels. Set head=multihead, or scenario.curriculum=single for one shared head.")
    if not evaluates:
        raise ConfigError("This scenario is a curriculum: it advances when the continual evaluator's scores pass its "
                          "threshold, so the continual evaluator must be on. Set monitors.continual.enabled=true and "
                          "monitors.continual.every (e.g. 100) to how often to check.")
    if world_size > 1:
        raise ConfigError("Curriculum scenarios run in one process (the evaluator that drives them runs on rank 0 "
                          "only); set trainer.devices=1 trainer.num_nodes=1.")
