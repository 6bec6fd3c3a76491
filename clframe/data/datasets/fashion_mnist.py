"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from local idx files, MNIST's format and layout."""

from __future__ import annotations

from pathlib import Path

from clframe.config.registry import DATASETS
from clframe.data.datasets import Dataset
from clframe.data.datasets.mnist import load_idx_split
from clframe.data.offline import downloads_allowed, offline_hint
from clframe.errors import DatasetNotFoundError


@DATASETS.register("fashion_mnist")
def fashion_mnist(root: str | None = None, download: bool = False) -> Dataset:
    """Fashion-MNIST as [N, 1, 28, 28] floats in [0, 1] (60k train, 10k test, 10 classes).

    Args:
        root: directory with the four idx files (MNIST's names, plain or ``.gz``), directly or under
            ``FashionMNIST/raw`` where torchvision puts them (default ``data/fashion_mnist``).
        download: fetch the files with torchvision if they are missing (default False; never inside
            ``clframe.data.offline.offline()``, i.e. under ``clframe validate``).
    """
    path = Path(root or "data/fashion_mnist")
    train, test = load_idx_split(path, "train", "FashionMNIST"), load_idx_split(path, "test", "FashionMNIST")
    if (train is None or test is None) and download and downloads_allowed():
        from torchvision.datasets import FashionMNIST

        print(f"Downloading Fashion-MNIST to {path} (scenario.download=true) ...")
        FashionMNIST(str(path), train=True, download=True)
        FashionMNIST(str(path), train=False, download=True)
        train, test = load_idx_split(path, "train", "FashionMNIST"), load_idx_split(path, "test", "FashionMNIST")
    if train is None or test is None:
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found under '{path}'. Put train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            f"t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (plain or .gz, from "
            f"https://github.com/zalandoresearch/fashion-mnist) there, set scenario.data_root=<dir>, or allow "
            f"the download with scenario.download=true.{offline_hint()}"
        )
    return Dataset(*train, *test, n_classes=10, name="fashion_mnist")
