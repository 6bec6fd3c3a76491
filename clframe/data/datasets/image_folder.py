"""Any labelled image folder (``train/<class>/*.png`` and ``test/<class>/...``), decoded once into uint8 tensors."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from clframe.config.registry import DATASETS
from clframe.data.datasets import Dataset, ImageRecipe
from clframe.data.datasets.decode import IMAGE_SUFFIXES, cached_decode, decode_images, files_key
from clframe.errors import ConfigError, DatasetNotFoundError

LAYOUT = ("<root>/train/<class>/*.{jpg,jpeg,png} and <root>/test/<class>/... (or val/ for test/), "
          "one folder per class, all images of one size")


def class_files(folder: Path) -> list[Path]:
    """The images under ``folder`` and its subfolders (symlinks followed), in torchvision ImageFolder's order."""
    files = []
    for parent, _, names in sorted(os.walk(folder, followlinks=True)):
        files += [Path(parent) / n for n in sorted(names) if Path(n).suffix.lower() in IMAGE_SUFFIXES]
    return files


def list_split(split: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """``(file, label)`` of every image of ``split``, class by class; a class folder not in ``classes``
    or a class without images is an error."""
    unknown = sorted(d.name for d in split.iterdir() if d.is_dir() and d.name not in classes)
    if unknown:
        raise ConfigError(f"image_folder: {split} has class folder(s) {unknown} that {split.parent / 'train'} "
                          f"lacks; every test class must be a training class.")
    items = []
    for label, name in enumerate(classes):
        if (split / name).is_dir():
            items += [(p, label) for p in class_files(split / name)]
    return items


def channel_stats(x: torch.Tensor, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of the [0, 1] pixels of uint8 ``x`` [N, C, H, W],
    summed in float64 over chunks of images; a channel of constant value gets std 1."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk].to(torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        squares += part.square_().sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = (squares / n - mean.square()).clamp_(min=0).sqrt_()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return tuple(mean.tolist()), tuple(std.tolist())


@DATASETS.register("image_folder")
def image_folder(root: str | None = None, download: bool = False) -> Dataset:
    """Images from ``<root>/train/<class>/`` and ``<root>/test/<class>/`` (or ``val/``) as uint8 [N, 3, H, W].

    Classes are the sorted folder names of ``train/`` (torchvision ImageFolder's convention); a test
    class that ``train/`` lacks is an error. Files ending in .jpg, .jpeg or .png (any case) count, also
    in subfolders of a class folder; grayscale and RGBA images become RGB. All images must have one
    size (nothing is resized): otherwise the error names two files and their sizes. ``test/`` is used
    when both ``test/`` and ``val/`` exist.

    The recipe is computed: ``mean`` and ``std`` per channel of the training images' [0, 1] pixels
    (float64, population std; a constant channel gets std 1), crop padding ``max(1, H // 8)`` for
    images at least 16 pixels high (4 for 32x32, 8 for 64x64) else 0, and horizontal flips. The decoded
    tensors are cached in ``<root>/.clframe-image_folder-<hash>.pt``
    (``clframe.data.datasets.decode.cached_decode``).

    Args:
        root: the folder holding ``train/`` and ``test/`` (no default: set ``scenario.data_root``).
        download: ignored; there is nothing to download.
    """
    if root is None:
        raise DatasetNotFoundError(f"image_folder needs a folder: set scenario.data_root=<dir> with {LAYOUT}.")
    path = Path(root)
    train_dir = path / "train"
    test_dir = next((path / s for s in ("test", "val") if (path / s).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        missing = " and ".join(s for s, ok in (("train/", train_dir.is_dir()), ("test/ (or val/)", test_dir))
                               if not ok)
        raise DatasetNotFoundError(f"image_folder: '{path}' has no {missing}. Lay the images out as {LAYOUT}, "
                                   f"and set scenario.data_root=<dir> to that folder.")
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if not classes:
        raise DatasetNotFoundError(f"image_folder: {train_dir} has no class folder. Lay the images out as {LAYOUT}.")
    train, test = list_split(train_dir, classes), list_split(test_dir, classes)
    labelled = {label for _, label in train}
    empty = [c for i, c in enumerate(classes) if i not in labelled]
    if empty:
        raise DatasetNotFoundError(f"image_folder: the class folder(s) {empty} of {train_dir} hold no "
                                   f".jpg, .jpeg or .png image.")
    if not test:
        raise DatasetNotFoundError(f"image_folder: {test_dir} holds no .jpg, .jpeg or .png image in a class folder.")

    def build() -> dict[str, torch.Tensor]:
        x = decode_images([p for p, _ in train + test])  # one size for both splits
        return {"x_train": x[:len(train)], "y_train": torch.tensor([y for _, y in train], dtype=torch.int64),
                "x_test": x[len(train):], "y_test": torch.tensor([y for _, y in test], dtype=torch.int64)}

    key = "image_folder\n" + "\n".join(classes) + "\n--\n" + files_key(path, train) + "\n--\n" + files_key(path, test)
    d = cached_decode(path, "image_folder", build, key)
    mean, std = channel_stats(d["x_train"])
    h = d["x_train"].shape[2]
    recipe = ImageRecipe(mean=mean, std=std, padding=max(1, h // 8) if h >= 16 else 0, flip=True)
    return Dataset(d["x_train"], d["y_train"], d["x_test"], d["y_test"], n_classes=len(classes),
                   name="image_folder", image=recipe)
