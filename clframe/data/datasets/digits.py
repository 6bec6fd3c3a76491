"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, no download)."""

from __future__ import annotations

import torch

from clframe.config.registry import DATASETS
from clframe.data.datasets import Dataset, seeded_split


@DATASETS.register("digits")
def digits(root: str | None = None, download: bool = False) -> Dataset:
    """Digits as [N, 1, 8, 8] floats in [0, 1]; a fixed seeded 75/25 train/test split.

    Args:
        root: unused (the data ships with scikit-learn).
        download: unused.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    # the split seed is fixed so every run and seed is evaluated on the same test set
    return Dataset(*seeded_split(x, y, test_fraction=0.25, seed=0), n_classes=10, name="digits")
