"""Helpers shared by scenario builders."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from clframe.data.datasets import Dataset
from clframe.data.stream import Experience, Scenario, Stream, TensorData


def tensor_data(x: Tensor, y: Tensor, task: int) -> TensorData:
    """Wrap ``x, y`` with a constant task label (int64, whatever the targets' dtype)."""
    return TensorData(x, y, torch.full((len(y),), task, dtype=torch.long, device=y.device))


def domain_incremental(
    ds: Dataset, transforms: list[Callable[[Tensor], Tensor]], name: str, infos: list[dict] | None = None,
    task_incremental: bool = False,
) -> Scenario:
    """One experience per transform, each holding every class of ``ds`` transformed; task label 0,
    or experience ``i``'s index with ``task_incremental``."""
    classes = sorted(torch.unique(ds.y_train).tolist())
    label = (lambda i: i) if task_incremental else (lambda i: 0)
    exps = [
        Experience(
            index=i,
            train=tensor_data(f(ds.x_train), ds.y_train, label(i)),
            eval=tensor_data(f(ds.x_test), ds.y_test, label(i)),
            classes_in_this_experience=classes,
            task_label=label(i),
            info=(infos or [{}] * len(transforms))[i],
        )
        for i, f in enumerate(transforms)
    ]
    return Scenario(Stream(exps), n_classes=ds.n_classes, input_shape=tuple(ds.x_train.shape[1:]), name=name,
                    n_tasks=len(transforms) if task_incremental else 1)


def make_cumulative(scenario: Scenario) -> Scenario:
    """Joint incremental training: experience ``i`` trains on the union of the training data of
    experiences ``0..i`` (every batch is drawn from everything seen so far); eval data unchanged."""
    seen: list[TensorData] = []
    for e in scenario.stream:
        seen.append(e.train)
        e.train = TensorData(*(torch.cat(parts) for parts in zip(*((d.x, d.y, d.t) for d in seen))))
        e.classes_in_this_experience = sorted(set().union(*(set(x.classes_in_this_experience)
                                                             for x in scenario.stream[: e.index + 1])))
        e.info["cumulative"] = True
    scenario.name += " (cumulative)"
    return scenario


def symmetric_inputs(ds: Dataset) -> Dataset:
    """``ds`` with inputs mapped linearly from the training set's [min, max] to [-1, 1], as the
    loss-of-plasticity setups use (the test set goes through the same map)."""
    lo, hi = ds.x_train.min(), ds.x_train.max()
    scale = 2.0 / (hi - lo).clamp_min(1e-12)
    return Dataset((ds.x_train - lo) * scale - 1, ds.y_train, (ds.x_test - lo) * scale - 1, ds.y_test,
                   ds.n_classes, ds.name)


def stream_samples(n_available: int, n_tasks: int, per_task: int, g: torch.Generator) -> list[Tensor]:
    """Indices of ``per_task`` samples for each of ``n_tasks`` tasks, taken in order from one long
    stream that walks through seeded reshuffles of the ``n_available`` samples (a sample recurs only
    after every other one has been seen, as in a single pass over an endless stream)."""
    total = n_tasks * per_task
    order = torch.cat([torch.randperm(n_available, generator=g) for _ in range(-(-total // n_available))])
    return list(order[:total].split(per_task))


def check_streaming(n_tasks: int, per_task: int, per_task_key: str = "samples_per_task") -> None:
    """The errors a streaming scenario raises for a stream with no samples."""
    from clframe.errors import ConfigError

    if n_tasks < 1:
        raise ConfigError(f"scenario.n_tasks must be >= 1, got {n_tasks}: a stream needs at least one task.")
    if per_task < 1:
        raise ConfigError(f"scenario.{per_task_key} must be >= 1, got {per_task}: every task needs samples.")
