"""Split a dataset by class into experiences: class- or task-incremental."""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge
from clframe.scenarios._common import make_cumulative, tensor_data

from clframe.config.registry import SCENARIOS
from clframe.data.datasets import Dataset, load_dataset
from clframe.data.stream import Experience, Scenario, Stream
from clframe.errors import ConfigError


@SCENARIOS.register("split")
def split(
    dataset: str = "digits",
    n_experiences: Annotated[int, Ge(1)] = 5,
    task_incremental: bool = False,
    class_order: list[int] | None = None,
    shuffle_classes: bool = False,
    cumulative: bool = False,
    seed: int = 0,
    data_root: str | None = None,
    download: bool = False,
) -> Scenario:
    """Split ``dataset`` into ``n_experiences`` groups of classes.

    Args:
        dataset: dataset name (default ``digits``).
        n_experiences: number of experiences; classes are divided as evenly as possible (default 5).
        task_incremental: give experience ``i`` task label ``i`` (use a ``multihead`` head) (default False).
        class_order: explicit class order; overrides ``shuffle_classes`` (default: 0, 1, 2, ...).
        shuffle_classes: draw the class order from ``seed`` (default False).
        cumulative: joint incremental training: each experience trains on the data of all
            experiences so far (default False).
        seed: seed for the class order (default 0).
        data_root: dataset directory (default: the dataset's own).
        download: allow downloading a missing dataset (default False).
    """
    return split_dataset(load_dataset(dataset, data_root, download), n_experiences, task_incremental, class_order,
                         shuffle_classes, cumulative, seed)


def split_dataset(
    ds: Dataset, n_experiences: int = 5, task_incremental: bool = False, class_order: list[int] | None = None,
    shuffle_classes: bool = False, cumulative: bool = False, seed: int = 0,
) -> Scenario:
    """``split`` over an already loaded (or transformed) dataset ``ds``; the arguments are ``split``'s."""
    dataset = ds.name
    classes = sorted(torch.unique(ds.y_train).tolist())
    if class_order is not None:
        if sorted(class_order) != classes:
            raise ConfigError(f"scenario.class_order must be a permutation of {classes}, got {class_order}: "
                              f"{_order_problems(class_order, classes, dataset)}. List every class of {dataset} "
                              "exactly once, or set scenario.class_order=null for the order 0, 1, 2, ...")
        order = list(class_order)
    elif shuffle_classes:
        order = [classes[i] for i in torch.randperm(len(classes), generator=torch.Generator().manual_seed(seed))]
    else:
        order = classes
    if not 1 <= n_experiences <= len(order):
        why = (f"each experience needs at least one class and {dataset} has {len(order)} classes" if n_experiences > 1
               else "a stream needs at least one experience")
        raise ConfigError(f"scenario.n_experiences must be in [1, {len(order)}] for {dataset}, got {n_experiences}: "
                          f"{why}. Set scenario.n_experiences to a value in that range.")
    groups = [g.tolist() for g in torch.tensor(order).tensor_split(n_experiences)]
    exps = []
    for i, group in enumerate(groups):
        task = i if task_incremental else 0
        tr = torch.isin(ds.y_train, torch.tensor(group))
        te = torch.isin(ds.y_test, torch.tensor(group))
        exps.append(
            Experience(
                index=i,
                train=tensor_data(ds.x_train[tr], ds.y_train[tr], task),
                eval=tensor_data(ds.x_test[te], ds.y_test[te], task),
                classes_in_this_experience=group,
                task_label=task,
            )
        )
    kind = "task" if task_incremental else "class"
    scenario = Scenario(
        Stream(exps),
        n_classes=ds.n_classes,
        input_shape=tuple(ds.x_train.shape[1:]),
        n_tasks=n_experiences if task_incremental else 1,
        name=f"split-{dataset} ({kind}-incremental, {n_experiences} experiences)",
        image=ds.image,
    )
    return make_cumulative(scenario) if cumulative else scenario


def _order_problems(class_order: list[int], classes: list[int], dataset: str) -> str:
    """What is wrong with ``class_order`` as an ordering of ``classes``, e.g. ``class 10 is not in digits``."""
    given = set(class_order)
    extra = sorted(given - set(classes))
    missing = sorted(set(classes) - given)
    repeated = sorted(c for c in given if class_order.count(c) > 1)
    parts = []
    if extra:
        parts.append(f"{_classes(extra)} not in {dataset}")
    if missing:
        parts.append(f"{_classes(missing)} missing")
    if repeated:
        parts.append(f"{_classes(repeated)} listed more than once")
    return "; ".join(parts)


def _classes(cs: list[int]) -> str:
    return f"class {cs[0]} is" if len(cs) == 1 else f"classes {cs} are"
