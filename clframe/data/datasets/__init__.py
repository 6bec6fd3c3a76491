"""Datasets as in-memory tensors. Each module registers loaders in ``DATASETS``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Dataset:
    """A labelled dataset with a fixed train/test split.

    Args:
        x_train: inputs [N, ...] (float32). y_train: labels [N] (int64).
        x_test: inputs [M, ...]. y_test: labels [M].
        n_classes: number of classes.
        name: short name used in logs.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    name: str = ""


def seeded_split(x: Tensor, y: Tensor, test_fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Split ``(x, y)`` into train and test with a seeded shuffle."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def load_dataset(name: str, root: str | None = None, download: bool = False) -> Dataset:
    """Load the registered dataset ``name``.

    Args:
        name: a name in ``clframe.config.registry.DATASETS`` (``digits``, ``mnist1d``, ``mnist``, ...).
        root: directory to read from (default: the dataset's own default).
        download: allow fetching from the internet when the files are missing (default False).
    """
    from clframe.config.registry import DATASETS

    return DATASETS.get(name)(root=root, download=download)
