"""MNIST-1D, generated procedurally and offline with ``mnist1d.data.make_dataset``."""

from __future__ import annotations

from functools import lru_cache

import torch

from clframe.config.registry import DATASETS
from clframe.data.datasets import Dataset


@lru_cache(maxsize=1)
def _generate() -> tuple[torch.Tensor, ...]:
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset is offline and seeded (the package's defaults: 5000 samples, 80/20 split,
    # seed 42); get_dataset would try the network first.
    d = make_dataset(get_dataset_args())
    return (
        torch.tensor(d["x"], dtype=torch.float32),
        torch.tensor(d["y"], dtype=torch.long),
        torch.tensor(d["x_test"], dtype=torch.float32),
        torch.tensor(d["y_test"], dtype=torch.long),
    )


@DATASETS.register("mnist1d")
def mnist1d(root: str | None = None, download: bool = False) -> Dataset:
    """MNIST-1D as [N, 40] floats: 4000 train and 1000 test sequences, 10 classes.

    Args:
        root: unused (generated in memory, about 4 s, cached per process).
        download: unused.
    """
    x, y, xt, yt = _generate()
    return Dataset(x.clone(), y.clone(), xt.clone(), yt.clone(), n_classes=10, name="mnist1d")
