"""A dataset from one file of tensors (``.pt`` or ``.npz``), loaded without running any code."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from clframe.config.registry import DATASETS
from clframe.data.datasets import Dataset, seeded_split
from clframe.errors import ConfigError, DatasetNotFoundError

KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read(path: Path) -> dict[str, torch.Tensor]:
    """The arrays of ``path``: ``torch.load(weights_only=True)`` (tensors and plain containers only, no
    pickled objects) or ``np.load(allow_pickle=False)``; a file that needs more is refused."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: torch.from_numpy(z[k].copy()) for k in z.files}
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (ValueError, RuntimeError, OSError, pickle.UnpicklingError) as e:  # an object array, a pickled class
        why = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"dataset 'tensors': {path} cannot be read as plain arrays ({why}). It must hold only "
                          "tensors (.pt, saved with torch.save of a dict) or arrays (.npz, no object arrays); "
                          "nothing in it is run.") from e
    if not isinstance(data, dict) or not all(torch.is_tensor(v) for v in data.values()):
        raise ConfigError(f"dataset 'tensors': {path} must hold a dict of tensors, got {type(data).__name__}.")
    return data


@DATASETS.register("tensors")
def tensors(root: str | None = None, download: bool = False) -> Dataset:
    """A dataset of your own in one file: ``x_train, y_train, x_test, y_test``, or ``x, y`` (then split
    80/20 with a fixed seed). Inputs are converted to float32 (uint8 images divided by 255), labels to
    int64 class indices 0..K-1.

    Args:
        root: the ``.pt`` or ``.npz`` file (``scenario.data_root``; no default).
        download: unused: there is nothing to download (default False).
    """
    if root is None:
        raise ConfigError("dataset 'tensors' reads one .pt or .npz file: set scenario.data_root=<file> (a dict "
                          "with x_train, y_train, x_test, y_test, or x and y).")
    path = Path(root)
    if not path.is_file():
        raise DatasetNotFoundError(f"dataset 'tensors': no file at '{path}'. Save your data there with "
                                   "torch.save({'x': x, 'y': y}, path) or numpy.savez(path, x=x, y=y).")
    data = _read(path)
    if all(k in data for k in KEYS):
        parts = [data[k] for k in KEYS]
    elif "x" in data and "y" in data:
        parts = list(seeded_split(data["x"], data["y"], test_fraction=0.2, seed=0))
    else:
        raise ConfigError(f"dataset 'tensors': {path} holds {sorted(data)}; it needs x_train, y_train, x_test and "
                          "y_test, or x and y.")
    x_train, y_train, x_test, y_test = parts
    scale = 255.0 if x_train.dtype == torch.uint8 else 1.0
    x_train, x_test = x_train.float() / scale, x_test.float() / scale
    y_train, y_test = y_train.long(), y_test.long()
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    if min(int(y_train.min()), int(y_test.min())) < 0:
        raise ConfigError(f"dataset 'tensors': the labels in {path} must be class indices 0..K-1.")
    return Dataset(x_train, y_train, x_test, y_test, n_classes=n_classes, name=path.stem)
