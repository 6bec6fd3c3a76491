"""MNIST from local idx files; downloaded through torchvision only when allowed."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from clframe.config.registry import DATASETS
from clframe.data.datasets import Dataset, seeded_split
from clframe.data.offline import downloads_allowed, offline_hint
from clframe.errors import DatasetNotFoundError

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# beside the repository: <repo>/../shared/data/mnist-t10k (this file is <repo>/clframe/data/datasets/mnist.py)
T10K_DEFAULT = os.environ.get("CLFRAME_MNIST_T10K", str(Path(__file__).resolve().parents[4] / "shared/data/mnist-t10k"))


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped) into a uint8 array."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(root: Path, stem: str, folder: str = "MNIST") -> Path | None:
    for d in (root, root / folder / "raw"):  # torchvision downloads into <root>/<folder>/raw
        for name in (stem, stem + ".gz"):
            if (d / name).exists():
                return d / name
    return None


def load_idx_split(root: Path, split: str, folder: str = "MNIST") -> tuple[torch.Tensor, torch.Tensor] | None:
    """The images ([N, 1, H, W] floats in [0, 1]) and labels of ``split`` from idx files under ``root``
    (or ``root/<folder>/raw``), or None when a file is missing."""
    paths = [_find(root, stem, folder) for stem in FILES[split]]
    if None in paths:
        return None
    x = torch.from_numpy(read_idx(paths[0]).copy()).float().div_(255.0).unsqueeze(1)
    return x, torch.from_numpy(read_idx(paths[1]).astype(np.int64))


@DATASETS.register("mnist")
def mnist(root: str | None = None, download: bool = False) -> Dataset:
    """MNIST as [N, 1, 28, 28] floats in [0, 1] (60k train, 10k test).

    Args:
        root: directory with the four idx files, plain or ``.gz``, directly or under
            ``MNIST/raw`` (default ``data/mnist``).
        download: fetch the files with torchvision if they are missing (default False; never
            inside ``clframe.data.offline.offline()``, i.e. under ``clframe validate``).
    """
    path = Path(root or "data/mnist")
    train, test = load_idx_split(path, "train"), load_idx_split(path, "test")
    if (train is None or test is None) and download and downloads_allowed():
        from torchvision.datasets import MNIST

        print(f"Downloading MNIST to {path} (scenario.download=true) ...")
        MNIST(str(path), train=True, download=True)
        MNIST(str(path), train=False, download=True)
        train, test = load_idx_split(path, "train"), load_idx_split(path, "test")
    if train is None or test is None:
        raise DatasetNotFoundError(
            f"MNIST not found under '{path}'. Put train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            f"t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (plain or .gz) there, set "
            f"scenario.data_root=<dir>, or allow the download with scenario.download=true.{offline_hint()}"
        )
    return Dataset(*train, *test, n_classes=10, name="mnist")


@DATASETS.register("mnist_t10k")
def mnist_t10k(root: str | None = None, download: bool = False) -> Dataset:
    """Only the real MNIST test set (10k images), split 80/20 with a fixed seed.

    For examples and benchmarks where the training set is not on disk.

    Args:
        root: directory with the t10k idx files (default ``$CLFRAME_MNIST_T10K`` or
            ``../shared/data/mnist-t10k`` beside the repository).
        download: fetch the files with torchvision if missing (default False; never inside
            ``clframe.data.offline.offline()``).
    """
    path = Path(root or T10K_DEFAULT)
    test = load_idx_split(path, "test")
    if test is None and download and downloads_allowed():
        from torchvision.datasets import MNIST

        MNIST(str(path), train=False, download=True)
        test = load_idx_split(path, "test")
    if test is None:
        raise DatasetNotFoundError(
            f"MNIST test set not found under '{path}'. Put t10k-images-idx3-ubyte[.gz] and "
            f"t10k-labels-idx1-ubyte[.gz] there, set scenario.data_root=<dir> (or CLFRAME_MNIST_T10K), "
            f"or allow the download with scenario.download=true.{offline_hint()}"
        )
    return Dataset(*seeded_split(*test, test_fraction=0.2, seed=0), n_classes=10, name="mnist_t10k")
