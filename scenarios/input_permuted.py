"""Input-permuted stream: a new fixed pixel permutation every K samples (boundary-free)."""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge
from clframe.scenarios._common import check_streaming, stream_samples, symmetric_inputs, tensor_data

from clframe.config.registry import SCENARIOS
from clframe.data.datasets import load_dataset
from clframe.data.stream import Experience, Scenario, Stream


@SCENARIOS.register("input_permuted")
def input_permuted(
    dataset: str = "digits",
    n_tasks: Annotated[int, Ge(1)] = 40,
    samples_per_task: Annotated[int, Ge(1)] = 2500,
    symmetric: bool = True,
    seed: int = 0,
    data_root: str | None = None,
    download: bool = False,
) -> Scenario:
    """Task ``i`` is the next ``samples_per_task`` samples of one long pass through the data, with the
    input features under task ``i``'s fixed random permutation. Boundary-free: strategies get no
    experience signal; the task boundaries are kept for the metrics. At ``train.batch_size=1`` and
    ``train.epochs=1`` a task is ``samples_per_task`` steps.

    Args:
        dataset: dataset name, e.g. ``digits`` or ``mnist1d`` (default ``digits``).
        n_tasks: number of permutations (default 40).
        samples_per_task: training samples per task (default 2500).
        symmetric: inputs mapped to [-1, 1] (default True).
        seed: seed of the permutations and the sample order (default 0).
        data_root: dataset directory (default: the dataset's own).
        download: allow downloading a missing dataset (default False).
    """
    check_streaming(n_tasks, samples_per_task)
    ds = load_dataset(dataset, data_root, download)
    ds = symmetric_inputs(ds) if symmetric else ds
    shape = ds.x_train.shape[1:]
    d = shape.numel()
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(d, generator=g) for _ in range(n_tasks)]
    picks = stream_samples(len(ds.y_train), n_tasks, samples_per_task, g)
    classes = sorted(torch.unique(ds.y_train).tolist())

    def permute(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, p].reshape(len(x), *shape)

    exps = [
        Experience(i, tensor_data(permute(ds.x_train[idx], p), ds.y_train[idx], 0),
                   tensor_data(permute(ds.x_test, p), ds.y_test, 0), classes, info={"permutation": p})
        for i, (p, idx) in enumerate(zip(perms, picks))
    ]
    return Scenario(Stream(exps, boundary_free=True), n_classes=ds.n_classes, input_shape=tuple(shape),
                    name=f"input-permuted-{dataset} ({n_tasks} tasks x {samples_per_task})")
