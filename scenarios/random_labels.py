"""Random-label memorisation: a fixed small subset relabelled at random at every task (trainability)."""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge
from clframe.scenarios._common import check_streaming, symmetric_inputs, tensor_data

from clframe.config.registry import SCENARIOS
from clframe.data.datasets import load_dataset
from clframe.data.stream import Experience, Scenario, Stream


@SCENARIOS.register("random_labels")
def random_labels(
    dataset: str = "digits",
    n_tasks: Annotated[int, Ge(1)] = 40,
    subset: Annotated[int, Ge(1)] = 256,
    symmetric: bool = True,
    seed: int = 0,
    data_root: str | None = None,
    download: bool = False,
) -> Scenario:
    """Every task trains on the same ``subset`` training images with fresh uniform random labels, and
    is evaluated on that subset with its own labels: the accuracy at the end of each task (the
    diagonal of the accuracy matrix) measures trainability. Boundary-free. The steps per task come
    from the run settings: ``train.epochs * ceil(subset / train.batch_size)`` (e.g. 125 epochs of 256
    at batch 32 = 1000 steps).

    Args:
        dataset: dataset name, e.g. ``digits`` or ``mnist1d`` (default ``digits``).
        n_tasks: number of relabellings (default 40).
        subset: number of images memorised, drawn once (default 256).
        symmetric: inputs mapped to [-1, 1] (default True).
        seed: seed of the subset and the labels (default 0).
        data_root: dataset directory (default: the dataset's own).
        download: allow downloading a missing dataset (default False).
    """
    check_streaming(n_tasks, subset, "subset")
    ds = load_dataset(dataset, data_root, download)
    ds = symmetric_inputs(ds) if symmetric else ds
    g = torch.Generator().manual_seed(seed)
    x = ds.x_train[torch.randperm(len(ds.y_train), generator=g)[:subset]]
    labels = [torch.randint(0, ds.n_classes, (len(x),), generator=g) for _ in range(n_tasks)]
    exps = [Experience(i, tensor_data(x, y, 0), tensor_data(x, y, 0), list(range(ds.n_classes)))
            for i, y in enumerate(labels)]
    return Scenario(Stream(exps, boundary_free=True), n_classes=ds.n_classes, input_shape=tuple(x.shape[1:]),
                    name=f"random-labels-{dataset} ({n_tasks} tasks x {len(x)} images)")
