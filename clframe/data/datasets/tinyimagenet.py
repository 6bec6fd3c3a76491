"""TinyImageNet (Le & Yang 2015) from the official archive's JPEG folders, decoded once into uint8 tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from clframe.config.registry import DATASETS
from clframe.data.datasets import Dataset, ImageRecipe
from clframe.data.datasets.decode import cached_decode, decode_images, files_key
from clframe.data.offline import downloads_allowed, offline_hint
from clframe.errors import ConfigError, DatasetNotFoundError

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"  # Avalanche's checksum of the archive
FOLDER = "tiny-imagenet-200"
# Mammoth's seq-tinyimg normalisation; crop 64 with padding 4 and horizontal flips
RECIPE = ImageRecipe(mean=(0.4802, 0.4480, 0.3975), std=(0.2770, 0.2691, 0.2821), padding=4, flip=True)


def find_folder(root: Path) -> Path | None:
    """``root/tiny-imagenet-200`` (where the archive extracts) or ``root`` itself, whichever holds ``wnids.txt``."""
    for d in (root / FOLDER, root):
        if (d / "wnids.txt").is_file():
            return d
    return None


def read_wnids(folder: Path) -> list[str]:
    """The class wnids in the order of ``wnids.txt`` (first occurrence kept, as Avalanche's ``labels2dict``)."""
    wnids: list[str] = []
    for line in (folder / "wnids.txt").read_text().splitlines():
        wnid = line.strip()
        if wnid and wnid not in wnids:
            wnids.append(wnid)
    if not wnids:
        raise ConfigError(f"{folder / 'wnids.txt'} lists no class.")
    return wnids


def is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in (".jpeg", ".jpg", ".png")


def train_files(folder: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    """``(file, label)`` of ``train/<wnid>/images/*``, class by class in wnid order, files sorted by name."""
    items = []
    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        if not images.is_dir():
            raise DatasetNotFoundError(f"TinyImageNet: the class {wnid} of wnids.txt has no folder {images}. "
                                       f"Extract the whole archive ({URL}) again.")
        files = sorted((p for p in images.iterdir() if is_image(p)), key=lambda p: p.name)
        if not files:
            raise DatasetNotFoundError(f"TinyImageNet: {images} holds no image. "
                                       f"Extract the whole archive ({URL}) again.")
        items += [(p, label) for p in files]
    return items


def val_files(folder: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    """``(file, label)`` of ``val/images/*`` labelled by ``val/val_annotations.txt`` (tab-separated: file,
    wnid, box), grouped by class in wnid order and in the annotation file's order within a class (Avalanche's
    order). A missing annotation file, an image without annotation or an annotation without image is an error."""
    annotations, images = folder / "val" / "val_annotations.txt", folder / "val" / "images"
    if not annotations.is_file():
        raise DatasetNotFoundError(f"TinyImageNet: {annotations} is missing: the validation images (the test set) "
                                   f"cannot be labelled without it. Extract the whole archive ({URL}) again.")
    index = {w: i for i, w in enumerate(wnids)}
    by_class: list[list[Path]] = [[] for _ in wnids]
    named = set()
    for n, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1].strip() not in index:
            raise ConfigError(f"{annotations}, line {n}: expected '<file>\\t<wnid>\\t<box>' with a wnid of "
                              f"wnids.txt, got {line!r}.")
        name = fields[0].strip()
        if not (images / name).is_file():
            raise DatasetNotFoundError(f"TinyImageNet: {annotations}, line {n} names {images / name}, "
                                       f"which is missing.")
        named.add(name)
        by_class[index[fields[1].strip()]].append(images / name)
    unlabelled = sorted(p.name for p in images.iterdir() if is_image(p) and p.name not in named) \
        if images.is_dir() else []
    if unlabelled:
        raise ConfigError(f"TinyImageNet: {len(unlabelled)} image(s) of {images} have no line in {annotations} "
                          f"(e.g. {unlabelled[0]}), so their class is unknown. "
                          f"Extract the whole archive ({URL}) again.")
    if not named:
        raise DatasetNotFoundError(f"TinyImageNet: {annotations} labels no image.")
    return [(p, label) for label, paths in enumerate(by_class) for p in paths]


def missing_message(path: Path) -> str:
    return (f"TinyImageNet not found under '{path}'. Download {URL} and extract it there, so that "
            f"'{path / FOLDER}' holds wnids.txt, train/<wnid>/images/*.JPEG and val/images/*.JPEG with "
            f"val/val_annotations.txt (or point scenario.data_root=<dir> at the extracted folder), or allow "
            f"the download with scenario.download=true.{offline_hint()}")


@DATASETS.register("tinyimagenet")
def tinyimagenet(root: str | None = None, download: bool = False) -> Dataset:
    """TinyImageNet (Le & Yang 2015): uint8 images [N, 3, 64, 64], 100k train (500 per class), 10k test,
    200 classes; normalised and augmented as in Mammoth's seq-tinyimg (crop 64 with padding 4, flip).

    The training set is ``train/``; the test set is the labelled ``val/`` folder (``test/`` has no labels),
    as in Avalanche, Mammoth and the other CL libraries. Class ``i`` is the ``i``-th wnid of ``wnids.txt``
    (file order, not sorted), the order of Avalanche's ``TinyImagenet.labels2dict``; samples are grouped by
    class in that order, training files sorted by name within a class (Avalanche takes directory order) and
    validation files in the order of ``val_annotations.txt`` (as Avalanche). ``n_classes`` is the number of
    wnids (200). The JPEGs (some grayscale, made RGB) are decoded once and cached beside them in
    ``.clframe-tinyimagenet-<hash>.pt`` (``clframe.data.datasets.decode.cached_decode``; about 1.4 GB).

    Args:
        root: directory holding ``tiny-imagenet-200/`` (the official archive, extracted), or that folder
            itself (default ``data/tinyimagenet``).
        download: fetch and extract the archive (~240 MB) from cs231n.stanford.edu if it is missing
            (default False; never inside ``clframe.data.offline.offline()``, i.e. under ``clframe validate``).
    """
    path = Path(root or "data/tinyimagenet")
    folder = find_folder(path)
    if folder is None and download and downloads_allowed():
        from torchvision.datasets.utils import download_and_extract_archive

        print(f"Downloading TinyImageNet to {path} (scenario.download=true) ...")
        download_and_extract_archive(URL, download_root=str(path), filename=f"{FOLDER}.zip", md5=MD5)
        folder = find_folder(path)
    if folder is None:
        raise DatasetNotFoundError(missing_message(path))
    wnids = read_wnids(folder)
    train, test = train_files(folder, wnids), val_files(folder, wnids)

    def build() -> dict[str, torch.Tensor]:
        x = decode_images([p for p, _ in train + test])  # one size for both splits
        return {"x_train": x[:len(train)], "y_train": torch.tensor([y for _, y in train], dtype=torch.int64),
                "x_test": x[len(train):], "y_test": torch.tensor([y for _, y in test], dtype=torch.int64)}

    key = "tinyimagenet\n" + files_key(folder, train) + "\n--\n" + files_key(folder, test)
    d = cached_decode(folder, "tinyimagenet", build, key)
    return Dataset(d["x_train"], d["y_train"], d["x_test"], d["y_test"], n_classes=len(wnids),
                   name="tinyimagenet", image=RECIPE)
