"""Experience, Stream and Scenario: the Avalanche-style vocabulary, backed by tensors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class TensorData:
    """In-memory samples: inputs ``x`` [N, ...], class labels ``y`` [N], task labels ``t`` [N]."""

    x: Tensor
    y: Tensor
    t: Tensor

    def __post_init__(self) -> None:
        if not (len(self.x) == len(self.y) == len(self.t)):
            raise ValueError(f"x, y, t lengths differ: {len(self.x)}, {len(self.y)}, {len(self.t)}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: Tensor) -> TensorData:
        """Samples at ``idx`` (an index or boolean tensor)."""
        return TensorData(self.x[idx], self.y[idx], self.t[idx])

    def to(self, device: torch.device | str) -> TensorData:
        return TensorData(self.x.to(device), self.y.to(device), self.t.to(device))


@dataclass
class Experience:
    """One step of the stream.

    Args:
        index: position in the stream (Avalanche's ``current_experience``).
        train: training samples of this experience.
        eval: evaluation (test) samples of this experience.
        classes_in_this_experience: the class labels it contains.
        task_label: the task label (0 for class- and domain-incremental streams).
        info: anything else the scenario wants strategies to know.
    """

    index: int
    train: TensorData
    eval: TensorData
    classes_in_this_experience: list[int]
    task_label: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def current_experience(self) -> int:
        """Avalanche's name for ``index``."""
        return self.index


@dataclass
class Stream:
    """Ordered experiences. ``boundary_free`` streams give strategies no experience signals;
    the boundaries are then kept only for evaluation. ``ordered`` streams are time series: each
    experience's samples are trained in the given order, never shuffled (e.g. a drifting stream
    whose targets depend on the step)."""

    experiences: list[Experience]
    boundary_free: bool = False
    ordered: bool = False

    def __len__(self) -> int:
        return len(self.experiences)

    def __getitem__(self, i: int) -> Experience:
        return self.experiences[i]

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)


@dataclass
class Scenario:
    """What a scenario builder returns.

    Args:
        stream: the experiences, each with its train and eval data.
        n_classes: size of the label space (the head's output size).
        input_shape: shape of one input sample, e.g. ``(1, 8, 8)``.
        n_tasks: number of distinct task labels (1 unless task-incremental).
        name: a short description used in logs.
        objective: ``classification`` (labels ``y`` [N] in ``[0, n_classes)``) or ``regression``
            (float targets ``y`` [N] or [N, n_classes]; ``n_classes`` is then the output size)
            (default ``classification``).
        curriculum: a ``clframe.data.curriculum.Curriculum`` when the stream advances on the learner's
            scores instead of after a fixed number of steps (default None).
        image: a ``clframe.data.datasets.ImageRecipe`` when the inputs are uint8 images: the model
            normalises them and training augments them (default None: float inputs as they are).
    """

    stream: Stream
    n_classes: int
    input_shape: tuple[int, ...]
    n_tasks: int = 1
    name: str = ""
    objective: str = "classification"
    curriculum: Any = None
    image: Any = None

    @property
    def train_stream(self) -> list[TensorData]:
        return [e.train for e in self.stream]

    @property
    def test_stream(self) -> list[TensorData]:
        return [e.eval for e in self.stream]

    def to(self, device: torch.device | str) -> Scenario:
        """Move every experience's data to ``device`` (in place); returns self."""
        for e in self.stream:
            e.train, e.eval = e.train.to(device), e.eval.to(device)
        return self
