"""scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, no download)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from clframe.config.registry import DATASETS
from clframe.data.datasets import Dataset, seeded_split


def _bundled_csv() -> Path | None:
    """The digits file inside the installed scikit-learn, found without importing it (``sklearn.datasets``
    imports SciPy: 0.85 s of a run's start-up); None if it is not where scikit-learn keeps it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    return path if path.exists() else None


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Images [1797, 8, 8] (values 0..16) and labels [1797], as ``sklearn.datasets.load_digits`` gives
    them: read from its CSV directly where it is, else through scikit-learn."""
    csv = _bundled_csv()
    if csv is None:
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images, d.target
    data = np.loadtxt(csv, delimiter=",")  # what load_digits reads: 64 pixels, then the label
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


@DATASETS.register("digits")
def digits(root: str | None = None, download: bool = False) -> Dataset:
    """Digits as [N, 1, 8, 8] floats in [0, 1]; a fixed seeded 75/25 train/test split.

    Args:
        root: unused (the data ships with scikit-learn).
        download: unused.
    """
    images, target = load_digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(target, dtype=torch.long)
    # the split seed is fixed so every run and seed is evaluated on the same test set
    return Dataset(*seeded_split(x, y, test_fraction=0.25, seed=0), n_classes=10, name="digits")
