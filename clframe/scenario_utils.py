"""Helpers shared by scenario builders."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from clframe.datasets import Dataset
from clframe.stream import Experience, Scenario, Stream, TensorData


def tensor_data(x: Tensor, y: Tensor, task: int) -> TensorData:
    """Wrap ``x, y`` with a constant task label."""
    return TensorData(x, y, torch.full_like(y, task))


def domain_incremental(
    ds: Dataset, transforms: list[Callable[[Tensor], Tensor]], name: str, infos: list[dict] | None = None
) -> Scenario:
    """One experience per transform, each holding every class of ``ds`` transformed; task label 0."""
    classes = sorted(torch.unique(ds.y_train).tolist())
    exps = [
        Experience(
            index=i,
            train=tensor_data(f(ds.x_train), ds.y_train, 0),
            eval=tensor_data(f(ds.x_test), ds.y_test, 0),
            classes_in_this_experience=classes,
            info=(infos or [{}] * len(transforms))[i],
        )
        for i, f in enumerate(transforms)
    ]
    return Scenario(Stream(exps), n_classes=ds.n_classes, input_shape=tuple(ds.x_train.shape[1:]), name=name)


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
