"""CIFAR-10 and CIFAR-100 from the official python-version archives, as uint8 images in memory.

Security: the python-version batches are pickles. They are read only from the directory the user names
(``scenario.data_root``, or the default ``data/cifar10`` / ``data/cifar100``), never from a run directory
or a checkpoint, and through an unpickler that builds nothing but plain containers and NumPy arrays: a
file that names any other class or function is refused before it is run (``safe_unpickle``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clframe.config.registry import DATASETS
from clframe.data.datasets import Dataset, ImageRecipe
from clframe.data.offline import downloads_allowed, offline_hint
from clframe.errors import ConfigError, DatasetNotFoundError

# what a CIFAR batch may construct: NumPy arrays (the images) and their dtypes; dicts, lists, ints and
# bytes need no class lookup. NumPy 2 pickles under numpy._core, NumPy 1 under numpy.core; a batch
# re-pickled by Python 3 at protocol 2 spells its bytes as _codecs.encode(str, "latin1").
ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
           ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

# (folder in the archive, training files, test file, label key, classes, torchvision class, the DER/Mammoth recipe)
LAYOUT: dict[str, dict[str, Any]] = {
    "cifar10": {"folder": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)],
                "test": "test_batch", "labels": b"labels", "classes": 10, "torchvision": "CIFAR10",
                "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "image": ImageRecipe(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2615))},
    "cifar100": {"folder": "cifar-100-python", "train": ["train"], "test": "test", "labels": b"fine_labels",
                 "classes": 100, "torchvision": "CIFAR100",
                 "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "image": ImageRecipe(mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))},
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the NumPy array constructors in ``ALLOWED``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR batch holds only arrays")


def safe_unpickle(path: Path) -> Any:
    """The object pickled in ``path`` (a CIFAR python-version batch, pickled by Python 2 with bytes
    keys), built by ``SafeUnpickler``; a ``ConfigError`` naming the file if it needs anything else."""
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise ConfigError(f"{path} is not a CIFAR python-version batch ({e}); nothing in it was run.") from e


def read_batch(path: Path, label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file: images uint8 [N, 3, 32, 32] (the rows are R, G, B planes of 32x32) and labels [N]."""
    d = safe_unpickle(path)
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        keys = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise ConfigError(f"{path} is not a CIFAR batch: it holds {keys}, not b'data' and {label_key!r}.")
    x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    x = x if x.flags.writeable else x.copy()  # an unpickled array owns its memory: no second copy
    return torch.from_numpy(x), torch.as_tensor(np.asarray(d[label_key], dtype=np.int64))


def find_folder(root: Path, folder: str) -> Path | None:
    """``root/<folder>`` (where the archive and torchvision put the batches) or ``root`` itself."""
    for d in (root / folder, root):
        if (d / ("batches.meta" if folder.startswith("cifar-10-") else "meta")).exists() or \
                (d / ("test_batch" if folder.startswith("cifar-10-") else "test")).exists():
            return d
    return None


def load_cifar(name: str, root: str | None, download: bool) -> Dataset:
    """``cifar10`` or ``cifar100`` (``LAYOUT``) from ``root`` (default ``data/<name>``)."""
    spec = LAYOUT[name]
    path = Path(root or f"data/{name}")
    found = find_folder(path, spec["folder"])
    if found is None and download and downloads_allowed():
        import torchvision.datasets as tvd

        print(f"Downloading {name} to {path} (scenario.download=true) ...")
        getattr(tvd, spec["torchvision"])(str(path), train=True, download=True)
        found = find_folder(path, spec["folder"])
    files = [*spec["train"], spec["test"]]
    missing = [f for f in files if found is None or not (found / f).exists()]
    if missing:
        raise DatasetNotFoundError(
            f"{name} not found under '{path}' (missing {', '.join(missing)}). Extract the python version "
            f"({spec['url']}) there, so that '{path / spec['folder']}' holds {', '.join(files)}; set "
            f"scenario.data_root=<dir>, or allow the download with scenario.download=true.{offline_hint()}")
    parts = [read_batch(found / f, spec["labels"]) for f in spec["train"]]
    x_test, y_test = read_batch(found / spec["test"], spec["labels"])
    x_train, y_train = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return Dataset(x_train, y_train, x_test, y_test, n_classes=spec["classes"], name=name, image=spec["image"])


@DATASETS.register("cifar10")
def cifar10(root: str | None = None, download: bool = False) -> Dataset:
    """CIFAR-10 (Krizhevsky 2009): uint8 images [N, 3, 32, 32], 50k train, 10k test, 10 classes in the
    official label order; normalised and augmented as in DER/Mammoth (crop 32 with padding 4, flip).

    Args:
        root: directory holding ``cifar-10-batches-py/`` (the python-version archive, extracted), or that
            folder itself (default ``data/cifar10``). The batches are pickles: only this directory's are
            read, and only arrays are built from them (see the module docstring).
        download: fetch the archive with torchvision if it is missing (default False; never inside
            ``clframe.data.offline.offline()``, i.e. under ``clframe validate``).
    """
    return load_cifar("cifar10", root, download)


@DATASETS.register("cifar100")
def cifar100(root: str | None = None, download: bool = False) -> Dataset:
    """CIFAR-100 (Krizhevsky 2009): uint8 images [N, 3, 32, 32], 50k train, 10k test, the 100 fine labels
    in the official order; normalised and augmented as in Mammoth's seq-cifar100 (crop 32, padding 4, flip).

    Args:
        root: directory holding ``cifar-100-python/`` (the python-version archive, extracted), or that
            folder itself (default ``data/cifar100``). Pickles: read as for ``cifar10``.
        download: fetch the archive with torchvision if it is missing (default False; never inside
            ``clframe.data.offline.offline()``).
    """
    return load_cifar("cifar100", root, download)
