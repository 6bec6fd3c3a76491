"""Datasets as in-memory tensors. Each module registers loaders in ``DATASETS``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ImageRecipe:
    """How a dataset's uint8 images [N, C, H, W] are fed to a model, the standard CL recipe by default.

    The model scales them to [0, 1] and normalises each channel (``clframe.models.preprocess``), so
    evaluation, teachers and importance estimates see the inputs training sees; training batches,
    replayed samples included, are augmented on the device first (``clframe.data.augment``).

    Args:
        mean: per-channel mean of the training images' [0, 1] pixels.
        std: per-channel standard deviation of the same.
        padding: random-crop padding in pixels, zeros as torchvision's ``RandomCrop(padding=)``;
            0: no crop (default 4).
        flip: random horizontal flips (default True).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    padding: int = 4
    flip: bool = True


@dataclass
class Dataset:
    """A labelled dataset with a fixed train/test split.

    Args:
        x_train: inputs [N, ...] (float32, or uint8 images [N, C, H, W] with an ``image`` recipe).
        y_train: labels [N] (int64).
        x_test: inputs [M, ...]. y_test: labels [M].
        n_classes: number of classes.
        name: short name used in logs.
        image: for uint8 images, how they are normalised and augmented (default None: float inputs
            fed as they are).
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    name: str = ""
    image: ImageRecipe | None = None


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
