"""Label-permuted stream: a new label permutation every K samples, composed with the previous ones."""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge
from clframe.scenarios._common import check_streaming, stream_samples, symmetric_inputs, tensor_data

from clframe.config.registry import SCENARIOS
from clframe.data.datasets import load_dataset
from clframe.data.stream import Experience, Scenario, Stream


@SCENARIOS.register("label_permuted")
def label_permuted(
    dataset: str = "digits",
    n_tasks: Annotated[int, Ge(1)] = 60,
    samples_per_task: Annotated[int, Ge(1)] = 2500,
    symmetric: bool = True,
    seed: int = 0,
    data_root: str | None = None,
    download: bool = False,
) -> Scenario:
    """Task ``i`` is the next ``samples_per_task`` samples of one long pass through the data, with labels
    ``y -> P_i(y)`` where ``P_i = p_i o P_{i-1}``: each task's fresh random permutation is composed with
    the previous mapping. Boundary-free (boundaries kept for the metrics only). At batch size B a task
    is ``samples_per_task / B`` steps.

    Args:
        dataset: dataset name, e.g. ``digits`` or ``mnist1d`` (default ``digits``).
        n_tasks: number of label permutations (default 60).
        samples_per_task: training samples per task (default 2500).
        symmetric: inputs mapped to [-1, 1] (default True).
        seed: seed of the permutations and the sample order (default 0).
        data_root: dataset directory (default: the dataset's own).
        download: allow downloading a missing dataset (default False).
    """
    check_streaming(n_tasks, samples_per_task)
    ds = load_dataset(dataset, data_root, download)
    ds = symmetric_inputs(ds) if symmetric else ds
    g = torch.Generator().manual_seed(seed)
    mapping = torch.arange(ds.n_classes)
    maps = []
    for _ in range(n_tasks):
        mapping = torch.randperm(ds.n_classes, generator=g)[mapping]
        maps.append(mapping)
    picks = stream_samples(len(ds.y_train), n_tasks, samples_per_task, g)
    exps = [
        Experience(i, tensor_data(ds.x_train[idx], m[ds.y_train[idx]], 0), tensor_data(ds.x_test, m[ds.y_test], 0),
                   list(range(ds.n_classes)), info={"label_map": m})
        for i, (m, idx) in enumerate(zip(maps, picks))
    ]
    return Scenario(Stream(exps, boundary_free=True), n_classes=ds.n_classes,
                    input_shape=tuple(ds.x_train.shape[1:]), name=f"label-permuted-{dataset} ({n_tasks} tasks)")
