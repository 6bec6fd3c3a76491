"""The recorded continual-evaluation curve that curve metrics are computed from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Curve:
    """Accuracy of every evaluated experience at every evaluation.

    Args:
        steps: [E] global optimizer step at which each evaluation happened (0 = before training).
        experience: [E] index of the experience being trained at that evaluation; an
            evaluation at an experience's last step belongs to it; -1 = before training.
        acc: [E, T] accuracy of each experience; NaN where it was not evaluated.
        boundaries: [T] global step at which the training of each experience ended
            (only the experiences trained so far).
    """

    steps: np.ndarray
    experience: np.ndarray
    acc: np.ndarray
    boundaries: np.ndarray

    def __post_init__(self) -> None:
        self.steps = np.asarray(self.steps, dtype=np.int64)
        self.experience = np.asarray(self.experience, dtype=np.int64)
        self.acc = np.asarray(self.acc, dtype=float).reshape(len(self.steps), -1)
        self.boundaries = np.asarray(self.boundaries, dtype=np.int64)

    @property
    def n_experiences(self) -> int:
        return self.acc.shape[1]

    def boundary_index(self, k: int) -> int:
        """Index of the last evaluation at or before the end of experience ``k``."""
        idx = np.nonzero(self.steps <= self.boundaries[k])[0]
        if len(idx) == 0:
            raise ValueError(f"no evaluation at or before the end of experience {k}")
        return int(idx[-1])
