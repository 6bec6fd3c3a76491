"""Image datasets read from JPEG/PNG folders (TinyImageNet, image_folder): uint8 tensors, class order,
recipes, the decode cache beside the data, and the missing-data errors. Synthetic files in the real formats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision.io as tio

import clframe.data.datasets.decode as decode
import clframe.data.datasets.image_folder as image_folder_module
import clframe.data.datasets.tinyimagenet as tin
from clframe.config.registry import DATASETS
from clframe.data.datasets import ImageRecipe, load_dataset
from clframe.data.offline import offline
from clframe.errors import ConfigError, DatasetNotFoundError

WNIDS = ("n02", "n01", "n03")  # wnids.txt order, not sorted: class i is the i-th line


def color(label: int) -> tuple[int, int, int]:
    return (30 + 90 * label, 200 - 60 * label, 100)


def write_jpeg(path: Path, img: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tio.write_file(str(path), tio.encode_jpeg(img, quality=95))


def write_png(path: Path, img: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if img.shape[0] == 4:  # torchvision encodes 1 or 3 channels
        from PIL import Image

        Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)
    else:
        tio.write_file(str(path), tio.encode_png(img))


def solid(label: int, size: int = 16) -> torch.Tensor:
    return torch.tensor(color(label), dtype=torch.uint8).view(3, 1, 1).expand(3, size, size).contiguous()


def fake_tinyimagenet(root: Path, n_train: int = 4, size: int = 16) -> Path:
    """The archive's layout under ``root/tiny-imagenet-200``: each class's images a solid colour; the
    first training image of the second class a grayscale JPEG; 2 validation images per class."""
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (folder / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in WNIDS))
    for label, wnid in enumerate(WNIDS):
        for i in range(n_train):
            img = solid(label, size)
            if label == 1 and i == 0:
                img = torch.full((1, size, size), 77, dtype=torch.uint8)
            write_jpeg(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", img)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    for j, label in enumerate([2, 0, 1, 0, 2, 1]):  # annotation order: class 0 is val_1, val_3
        write_jpeg(folder / "val" / "images" / f"val_{j}.JPEG", solid(label, size))
        lines.append(f"val_{j}.JPEG\t{WNIDS[label]}\t0\t0\t{size - 1}\t{size - 1}\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    write_jpeg(folder / "test" / "images" / "test_0.JPEG", solid(0, size))  # unlabelled: unused
    return folder


def cache_files(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".clframe-{name}-*.pt"))


def fail_decoding(*args, **kwargs):
    raise AssertionError("decoded again although the cache was valid")


# -- TinyImageNet ---------------------------------------------------------------------------------

def test_tinyimagenet_is_registered_with_the_standard_signature():
    assert {"tinyimagenet", "image_folder"} <= set(DATASETS.names())


def test_tinyimagenet_reads_the_archive_layout(tmp_path):
    folder = fake_tinyimagenet(tmp_path)
    d = load_dataset("tinyimagenet", root=str(tmp_path))
    assert d.name == "tinyimagenet" and d.n_classes == 3
    assert d.x_train.shape == (12, 3, 16, 16) and d.x_test.shape == (6, 3, 16, 16)
    assert d.x_train.dtype == d.x_test.dtype == torch.uint8
    assert d.y_train.dtype == torch.int64 and d.y_train.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert d.y_test.tolist() == [0, 0, 1, 1, 2, 2]  # by class, annotation order within (val_1, val_3, ...)
    # class i is the i-th wnid of wnids.txt (Avalanche's order): its images carry colour(i)
    gray = 0
    for x, y in [(d.x_train, d.y_train), (d.x_test, d.y_test)]:
        for img, label in zip(x, y.tolist(), strict=True):
            if torch.equal(img[0], img[1]) and torch.equal(img[1], img[2]):  # the grayscale JPEG, now RGB
                assert label == 1 and abs(img.float().mean().item() - 77) < 3
                gray += 1
                continue
            mean = img.float().mean(dim=(1, 2))
            assert torch.allclose(mean, torch.tensor(color(label), dtype=torch.float32), atol=4)
    assert gray == 1
    assert d.image == ImageRecipe(mean=(0.4802, 0.4480, 0.3975), std=(0.2770, 0.2691, 0.2821), padding=4, flip=True)
    # root may name the extracted folder itself; the cache beside the data is shared
    same = load_dataset("tinyimagenet", root=str(folder))
    assert torch.equal(same.x_train, d.x_train) and torch.equal(same.y_test, d.y_test)


def test_tinyimagenet_decodes_once_then_loads_the_cache(tmp_path, monkeypatch):
    folder = fake_tinyimagenet(tmp_path)
    first = load_dataset("tinyimagenet", root=str(tmp_path))
    assert len(cache_files(folder, "tinyimagenet")) == 1
    monkeypatch.setattr(tin, "decode_images", fail_decoding)
    second = load_dataset("tinyimagenet", root=str(tmp_path))
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_train, second.y_train)
    assert torch.equal(first.x_test, second.x_test) and torch.equal(first.y_test, second.y_test)
    monkeypatch.undo()
    # a changed folder is decoded again and its stale cache replaced
    write_jpeg(folder / "train" / "n03" / "images" / "n03_9.JPEG", solid(2))
    third = load_dataset("tinyimagenet", root=str(tmp_path))
    assert third.x_train.shape[0] == 13 and third.y_train[-1].item() == 2
    assert len(cache_files(folder, "tinyimagenet")) == 1 and cache_files(folder, "tinyimagenet") != []


def test_tinyimagenet_missing_says_where_what_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("tinyimagenet", root=str(tmp_path / "tin"))
    msg = str(e.value)
    assert str(tmp_path / "tin") in msg and tin.URL in msg and "wnids.txt" in msg
    assert "val_annotations.txt" in msg and "scenario.data_root" in msg and "scenario.download=true" in msg


def test_tinyimagenet_download_is_refused_offline(tmp_path, monkeypatch):
    import socket

    import torchvision.datasets.utils as tvu

    def no_download(*args, **kwargs):
        raise AssertionError("asked to download under offline()")

    monkeypatch.setattr(tvu, "download_and_extract_archive", no_download)
    monkeypatch.setattr(socket, "create_connection", no_download)
    monkeypatch.setattr(socket, "getaddrinfo", no_download)
    with offline(), pytest.raises(DatasetNotFoundError) as e:
        load_dataset("tinyimagenet", root=str(tmp_path / "tin"), download=True)
    assert "clframe validate" in str(e.value) and tin.URL in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_tinyimagenet_download_extracts_the_archive_when_allowed(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        calls.append((url, filename, md5))
        fake_tinyimagenet(Path(download_root))

    monkeypatch.setattr(tvu, "download_and_extract_archive", fake_download)
    d = load_dataset("tinyimagenet", root=str(tmp_path / "tin"), download=True)
    assert calls == [(tin.URL, "tiny-imagenet-200.zip", tin.MD5)] and d.x_train.shape[0] == 12


def test_tinyimagenet_validation_labels_are_checked(tmp_path):
    folder = fake_tinyimagenet(tmp_path)
    write_jpeg(folder / "val" / "images" / "val_99.JPEG", solid(0))
    with pytest.raises(ConfigError, match="val_99.JPEG"):
        load_dataset("tinyimagenet", root=str(tmp_path))
    (folder / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="val_annotations.txt"):
        load_dataset("tinyimagenet", root=str(tmp_path))


# -- image_folder ---------------------------------------------------------------------------------

def fake_folder(root: Path, size: int = 16, test: str = "val") -> dict[str, list[torch.Tensor]]:
    """PNGs of random pixels: classes cat, ant, bee (sorted: ant=0, bee=1, cat=2), 3 training images
    each, 2 test images of ant and cat; one training image grayscale, one RGBA."""
    gen = torch.Generator().manual_seed(0)
    written: dict[str, list[torch.Tensor]] = {}
    for split, classes, n in [("train", ("cat", "ant", "bee"), 3), (test, ("cat", "ant"), 2)]:
        for c in classes:
            for i in range(n):
                img = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen)
                stored = img
                if split == "train" and c == "bee" and i == 0:
                    stored = img[:1]
                    img = img[:1].expand(3, size, size)
                if split == "train" and c == "cat" and i == 1:
                    stored = torch.cat([img, torch.full((1, size, size), 255, dtype=torch.uint8)])
                write_png(root / split / c / f"{i}.png", stored)
                written.setdefault(f"{split}/{c}", []).append(img)
    return written


def test_image_folder_reads_pngs_in_imagefolder_class_order(tmp_path):
    written = fake_folder(tmp_path)
    d = load_dataset("image_folder", root=str(tmp_path))
    assert d.name == "image_folder" and d.n_classes == 3
    assert d.x_train.shape == (9, 3, 16, 16) and d.x_test.shape == (4, 3, 16, 16)
    assert d.x_train.dtype == torch.uint8 and d.y_train.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert d.y_test.tolist() == [0, 0, 2, 2]  # val/ stands for test/; labels are train's
    train = torch.stack([*written["train/ant"], *written["train/bee"], *written["train/cat"]])
    assert torch.equal(d.x_train, train)  # PNG is lossless; grayscale and RGBA became RGB
    assert torch.equal(d.x_test, torch.stack([*written["val/ant"], *written["val/cat"]]))
    pixels = train.double().div(255)
    assert d.image.mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert d.image.std == pytest.approx(pixels.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-9)
    assert d.image.padding == 2 and d.image.flip is True
    assert len(cache_files(tmp_path, "image_folder")) == 1


@pytest.mark.parametrize(("size", "padding"), [(8, 0), (32, 4)])
def test_image_folder_padding_follows_the_image_size(tmp_path, size, padding):
    fake_folder(tmp_path, size=size, test="test")
    assert load_dataset("image_folder", root=str(tmp_path)).image.padding == padding


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="scenario.data_root"):
        load_dataset("image_folder")
    with pytest.raises(DatasetNotFoundError, match="train/"):
        load_dataset("image_folder", root=str(tmp_path))
    fake_folder(tmp_path)
    write_png(tmp_path / "val" / "dog" / "0.png", solid(0))
    with pytest.raises(ConfigError, match="dog"):
        load_dataset("image_folder", root=str(tmp_path))
    (tmp_path / "val" / "dog" / "0.png").unlink()
    (tmp_path / "val" / "dog").rmdir()
    write_png(tmp_path / "train" / "bee" / "9.png", solid(0, size=12))
    with pytest.raises(ConfigError) as e:
        load_dataset("image_folder", root=str(tmp_path))
    assert "9.png is 12x12" in str(e.value) and "0.png is 16x16" in str(e.value)


def test_cache_falls_back_to_the_user_cache_then_to_none(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    fake_folder(data)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real_mkstemp = decode.tempfile.mkstemp
    refused = {str(data)}

    def mkstemp(*args, dir=None, **kwargs):
        if str(dir) in refused:
            raise PermissionError(13, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(decode.tempfile, "mkstemp", mkstemp)
    first = load_dataset("image_folder", root=str(data))
    assert cache_files(data, "image_folder") == []
    cached = list((tmp_path / "xdg" / "clframe").glob("image_folder-*.pt"))
    assert len(cached) == 1
    monkeypatch.setattr(image_folder_module, "decode_images", fail_decoding)
    assert torch.equal(load_dataset("image_folder", root=str(data)).x_train, first.x_train)
    # neither place writable: decoded every time, one warning
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg2"))
    refused.add(str(tmp_path / "xdg2" / "clframe"))
    monkeypatch.setattr(decode.tempfile, "mkstemp", mkstemp)
    capsys.readouterr()
    write_png(data / "train" / "ant" / "7.png", solid(0))
    again = load_dataset("image_folder", root=str(data))
    assert again.x_train.shape[0] == 10
    assert capsys.readouterr().err.count("warning: cannot cache the decoded image_folder images") == 1


def test_an_unreadable_cache_is_decoded_again(tmp_path, capsys):
    fake_folder(tmp_path)
    first = load_dataset("image_folder", root=str(tmp_path))
    (path,) = cache_files(tmp_path, "image_folder")
    path.write_bytes(b"not a torch file")
    assert torch.equal(load_dataset("image_folder", root=str(tmp_path)).x_train, first.x_train)
    assert "unreadable image cache" in capsys.readouterr().err
    assert torch.load(path, weights_only=True)["x_train"].shape == first.x_train.shape  # rewritten


def test_decode_images_uses_threads_and_keeps_the_order(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "CHUNK", 3)
    imgs = [torch.full((3, 8, 8), i * 20, dtype=torch.uint8) for i in range(10)]
    paths = []
    for i, img in enumerate(imgs):
        paths.append(tmp_path / f"{i}.png")
        write_png(paths[-1], img)
    out = decode.decode_images(paths, None, threads=4)
    assert out.shape == (10, 3, 8, 8) and torch.equal(out, torch.stack(imgs))
    assert decode.decode_images([], (8, 8)).shape == (0, 3, 8, 8)
    with pytest.raises(ConfigError, match="must be 4x4"):
        decode.decode_images(paths[:2], (4, 4))
    assert os.cpu_count()  # the default thread count needs it


def test_validate_reads_the_cache_but_writes_none(tmp_path):
    fake_folder(tmp_path)
    with offline():  # clframe validate writes no data
        load_dataset("image_folder", root=str(tmp_path))
    assert cache_files(tmp_path, "image_folder") == []
    first = load_dataset("image_folder", root=str(tmp_path))
    with offline():
        assert torch.equal(load_dataset("image_folder", root=str(tmp_path)).x_train, first.x_train)
    assert len(cache_files(tmp_path, "image_folder")) == 1
