"""Split digits or MNIST-1D read as sequences: class- or task-incremental streams for recurrent nets."""

from __future__ import annotations

from typing import Annotated

from annotated_types import Ge
from clframe.scenarios.split import split_dataset

from clframe.config.registry import SCENARIOS
from clframe.data.datasets import Dataset, load_dataset
from clframe.data.sequences import rows_as_steps
from clframe.data.stream import Scenario


def as_sequences(ds: Dataset, steps: int) -> Dataset:
    """``ds`` with every sample read as ``steps`` equal chunks plus the valid-step channel
    (``clframe.data.sequences``): inputs [N, steps, F + 1]."""
    return Dataset(rows_as_steps(ds.x_train, steps), ds.y_train, rows_as_steps(ds.x_test, steps), ds.y_test,
                   ds.n_classes, ds.name)


def _sequential(dataset: str, steps: int, n_experiences: int, task_incremental: bool, class_order: list[int] | None,
                shuffle_classes: bool, seed: int) -> Scenario:
    scenario = split_dataset(as_sequences(load_dataset(dataset), steps), n_experiences, task_incremental,
                             class_order, shuffle_classes, seed=seed)
    scenario.name = f"sequential-{scenario.name}"
    return scenario


@SCENARIOS.register("sequential_digits")
def sequential_digits(
    n_experiences: Annotated[int, Ge(1)] = 5,
    task_incremental: bool = False,
    class_order: list[int] | None = None,
    shuffle_classes: bool = False,
    seed: int = 0,
) -> Scenario:
    """scikit-learn digits as 8 steps of 8 pixels (one image row per step), split by class.

    Args:
        n_experiences: experiences; the 10 classes are divided as evenly as possible (default 5).
        task_incremental: experience ``i`` gets task label ``i`` (use ``head=multihead``) (default False).
        class_order: explicit class order (default 0, 1, 2, ...).
        shuffle_classes: draw the class order from ``seed`` (default False).
        seed: seed of the class order (default 0).
    """
    return _sequential("digits", 8, n_experiences, task_incremental, class_order, shuffle_classes, seed)


@SCENARIOS.register("sequential_mnist1d")
def sequential_mnist1d(
    n_experiences: Annotated[int, Ge(1)] = 5,
    task_incremental: bool = False,
    class_order: list[int] | None = None,
    shuffle_classes: bool = False,
    seed: int = 0,
) -> Scenario:
    """MNIST-1D (generated offline) as 40 steps of one value, split by class.

    Args: those of ``sequential_digits``.
    """
    return _sequential("mnist1d", 40, n_experiences, task_incremental, class_order, shuffle_classes, seed)
