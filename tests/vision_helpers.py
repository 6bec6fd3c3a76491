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


def write_tinyimagenet(root: Path, n_classes: int = 20, per_class_train: int = 2, per_class_val: int = 1,
                       size: int = 64, seed: int = 0) -> Path:
    """TinyImageNet-200's archive layout under ``root/tiny-imagenet-200`` (wnids.txt, train/<wnid>/images/*.JPEG,
    val/images/*.JPEG with val/val_annotations.txt), with ``n_classes`` learnable classes (``class_images``)."""
    import torch
    import torchvision.io as tio

    folder = root / "tiny-imagenet-200"
    wnids = [f"n{10000000 + 7 * i:08d}" for i in range(n_classes)]
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\tthing {i}\n" for i, w in enumerate(wnids)))

    def jpeg(path: Path, img: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tio.write_file(str(path), tio.encode_jpeg(torch.from_numpy(img), quality=95))

    x, y = class_images(n_classes, per_class_train, size=size, seed=seed)
    for i, (img, label) in enumerate(zip(x, y)):
        jpeg(folder / "train" / wnids[label] / "images" / f"{wnids[label]}_{i}.JPEG", img)
    for w in wnids:
        (folder / "train" / w / f"{w}_boxes.txt").write_text("")
    xv, yv = class_images(n_classes, per_class_val, size=size, seed=seed + 1)
    lines = []
    for j, (img, label) in enumerate(zip(xv, yv)):
        jpeg(folder / "val" / "images" / f"val_{j}.JPEG", img)
        lines.append(f"val_{j}.JPEG\t{wnids[label]}\t0\t0\t{size - 1}\t{size - 1}\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return folder
