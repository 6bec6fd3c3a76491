"""Small image datasets written in the real on-disk formats, for the vision tests (no downloads)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def class_images(n_classes: int, per_class: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable uint8 images [N, 3, size, size]: each class a colour and a stripe of its own, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    colours = np.random.default_rng(12345).integers(40, 216, size=(n_classes, 3))  # the same in every split
    x = rng.normal(0, 20, size=(len(y), 3, size, size)) + colours[y][:, :, None, None]
    rows = (y * 7) % (size - 4)
    for i, r in enumerate(rows):
        x[i, :, r:r + 4, :] += 60
    perm = rng.permutation(len(y))
    return np.clip(x, 0, 255).astype(np.uint8)[perm], y[perm]


def write_cifar(root: Path, name: str = "cifar10", per_class_train: int = 10, per_class_test: int = 4,
                seed: int = 0) -> Path:
    """The python-version archive's layout under ``root`` (``cifar-10-batches-py/`` or ``cifar-100-python/``):
    pickled dicts with bytes keys and [N, 3072] uint8 rows, as the official files (protocol 2)."""
    ten = name == "cifar10"
    n_classes = 10 if ten else 100
    folder = root / ("cifar-10-batches-py" if ten else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    x, y = class_images(n_classes, per_class_train, seed=seed)
    xt, yt = class_images(n_classes, per_class_test, seed=seed + 1)
    key = b"labels" if ten else b"fine_labels"

    def dump(path: Path, xs: np.ndarray, ys: np.ndarray) -> None:
        d = {b"batch_label": b"synthetic", key: ys.tolist(), b"data": xs.reshape(len(xs), -1),
             b"filenames": [b"x.png"] * len(ys)}
        if not ten:
            d[b"coarse_labels"] = (ys // 5).tolist()
        with open(path, "wb") as f:
            pickle.dump(d, f, protocol=2)

    if ten:
        for i, part in enumerate(np.array_split(np.arange(len(y)), 5)):
            dump(folder / f"data_batch_{i + 1}", x[part], y[part])
        dump(folder / "test_batch", xt, yt)
        meta = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": len(y) // 5}
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump(meta, f, protocol=2)
    else:
        dump(folder / "train", x, y)
        dump(folder / "test", xt, yt)
        with open(folder / "meta", "wb") as f:
            pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f, protocol=2)
    return folder
