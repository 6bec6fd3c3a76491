"""Datasets as in-memory tensors: shapes, ranges, fixed splits, and MNIST from local idx files."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from clframe.config.registry import DATASETS
from clframe.data.datasets import load_dataset, seeded_split
from clframe.data.datasets.mnist import T10K_DEFAULT, read_idx
from clframe.data.offline import offline
from clframe.errors import ConfigError, DatasetNotFoundError

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


def idx_bytes(a: np.ndarray) -> bytes:
    """Encode a uint8 array in the idx format: 0, 0, type 0x08 (uint8), ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + a.astype(np.uint8).tobytes()


def write_idx(path: Path, a: np.ndarray) -> None:
    data = idx_bytes(a)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def fake_mnist(root: Path, n_train: int = 10, n_test: int = 5, gz: bool = True) -> dict[str, np.ndarray]:
    """Write tiny MNIST idx files under ``root``; return the arrays written."""
    rng = np.random.default_rng(0)
    arrays = {
        MNIST_FILES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        MNIST_FILES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        MNIST_FILES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        MNIST_FILES[3]: (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for stem, a in arrays.items():
        write_idx(root / (stem + (".gz" if gz else "")), a)
    return arrays


def test_registered_datasets():
    assert {"digits", "mnist", "mnist1d", "mnist_t10k"} <= set(DATASETS.names())
    with pytest.raises(ConfigError, match="Did you mean 'mnist'"):
        load_dataset("mnsit")


# -- digits ---------------------------------------------------------------------------------------

def test_digits_shapes_range_and_split():
    d = load_dataset("digits")
    assert d.name == "digits" and d.n_classes == 10
    assert d.x_train.shape == (1348, 1, 8, 8) and d.x_test.shape == (449, 1, 8, 8)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    assert set(d.y_train.tolist()) == set(d.y_test.tolist()) == set(range(10))


def test_digits_split_is_fixed():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


def test_seeded_split():
    x, y = torch.arange(20.0).unsqueeze(1), torch.arange(20)
    xtr, ytr, xte, yte = seeded_split(x, y, test_fraction=0.25, seed=3)
    assert len(ytr) == 15 and len(yte) == 5
    assert sorted(torch.cat([ytr, yte]).tolist()) == list(range(20))
    assert torch.equal(xtr.squeeze(1).long(), ytr)
    assert torch.equal(seeded_split(x, y, 0.25, 3)[3], yte)
    assert not torch.equal(seeded_split(x, y, 0.25, 4)[3], yte)


# -- mnist1d --------------------------------------------------------------------------------------

def test_mnist1d_offline_shapes():
    d = load_dataset("mnist1d")
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40)
    assert d.y_train.shape == (4000,) and d.y_test.shape == (1000,)
    assert set(d.y_train.tolist()) == set(range(10)) and d.n_classes == 10
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64


def test_mnist1d_is_deterministic_and_each_load_is_a_copy():
    a = load_dataset("mnist1d")
    a.x_train.zero_()
    b = load_dataset("mnist1d")
    assert b.x_train.abs().sum() > 0  # the cached tensors were not modified through a
    assert torch.equal(b.y_test, load_dataset("mnist1d").y_test)


# -- mnist from idx files -------------------------------------------------------------------------

def test_read_idx_round_trips(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, a)
        assert np.array_equal(read_idx(tmp_path / name), a)


def test_mnist_missing_says_where_and_how_to_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("mnist", root=str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path) in msg
    assert "scenario.download=true" in msg
    assert "train-images-idx3-ubyte" in msg and "scenario.data_root" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_mnist_with_only_the_test_files_is_still_missing(tmp_path):
    fake_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(tmp_path))):
        load_dataset("mnist", root=str(tmp_path))


@pytest.mark.parametrize(("sub", "gz"), [("", True), ("", False), ("MNIST/raw", True)])
def test_mnist_reads_idx_files(tmp_path, sub, gz):
    arrays = fake_mnist(tmp_path / sub, gz=gz)
    d = load_dataset("mnist", root=str(tmp_path))
    assert d.name == "mnist" and d.n_classes == 10
    assert d.x_train.shape == (10, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert torch.allclose(d.x_train[:, 0], torch.from_numpy(arrays[MNIST_FILES[0]]).float() / 255)
    assert d.y_train.tolist() == arrays[MNIST_FILES[1]].tolist()
    assert torch.allclose(d.x_test[:, 0], torch.from_numpy(arrays[MNIST_FILES[2]]).float() / 255)
    assert d.y_test.tolist() == arrays[MNIST_FILES[3]].tolist()
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0


def test_split_scenario_on_local_mnist(tmp_path):
    from clframe.scenarios.split import split

    fake_mnist(tmp_path, n_train=20, n_test=10)
    s = split(dataset="mnist", data_root=str(tmp_path), n_experiences=5)
    assert s.input_shape == (1, 28, 28)
    assert [len(e.train) for e in s.stream] == [4] * 5


def test_mnist_t10k_missing_says_where(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("mnist_t10k", root=str(tmp_path))
    assert str(tmp_path) in str(e.value) and "scenario.download=true" in str(e.value)


@pytest.mark.parametrize("name", ["mnist", "mnist_t10k"])
def test_offline_never_downloads_even_when_asked(tmp_path, monkeypatch, name):
    import torchvision.datasets

    def no_download(*args, **kwargs):
        raise AssertionError("torchvision was asked to download under offline()")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_download)
    root = tmp_path / "mnist"
    with offline(), pytest.raises(DatasetNotFoundError) as e:
        load_dataset(name, root=str(root), download=True)
    msg = str(e.value)
    assert str(root) in msg and "`clframe validate` never downloads" in msg and "clframe run" in msg
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DatasetNotFoundError) as e:  # outside offline() the usual message, without the note
        load_dataset(name, root=str(root))
    assert "validate" not in str(e.value)


def test_mnist_t10k_reads_only_the_test_files(tmp_path):
    fake_mnist(tmp_path, n_test=10)
    for stem in MNIST_FILES[:2]:
        (tmp_path / (stem + ".gz")).unlink()
    d = load_dataset("mnist_t10k", root=str(tmp_path))
    assert len(d.y_train) == 8 and len(d.y_test) == 2
    assert sorted(torch.cat([d.y_train, d.y_test]).tolist()) == sorted(range(10))


@pytest.mark.skipif(not Path(T10K_DEFAULT).is_dir(), reason=f"real MNIST test set not at {T10K_DEFAULT}")
def test_mnist_t10k_real():
    d = load_dataset("mnist_t10k")
    assert d.x_train.shape == (8000, 1, 28, 28) and d.x_test.shape == (2000, 1, 28, 28)
    assert set(d.y_train.tolist()) == set(range(10))
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    assert torch.equal(d.y_test, load_dataset("mnist_t10k").y_test)  # fixed split


def test_the_mnist_test_set_is_looked_for_beside_the_repository(monkeypatch):
    import importlib

    import clframe.data.datasets.mnist as m

    monkeypatch.delenv("CLFRAME_MNIST_T10K", raising=False)
    repo = Path(__file__).resolve().parents[1]
    assert Path(importlib.reload(m).T10K_DEFAULT) == repo.parent / "shared" / "data" / "mnist-t10k"


def test_digits_read_without_scikit_learn_are_scikit_learns_digits(monkeypatch):
    import sys

    import numpy as np
    from sklearn.datasets import load_digits

    from clframe.data.datasets import digits as module

    monkeypatch.delitem(sys.modules, "sklearn.datasets", raising=False)
    images, target = module.load_digits_arrays()
    assert "sklearn.datasets" not in sys.modules  # read from the bundled file, SciPy not imported
    ref = load_digits()
    np.testing.assert_array_equal(images, ref.images)
    np.testing.assert_array_equal(target, ref.target)


def test_digits_fall_back_to_scikit_learn_where_the_file_is_not(monkeypatch):
    import numpy as np

    from clframe.data.datasets import digits as module

    monkeypatch.setattr(module, "_bundled_csv", lambda: None)
    images, target = module.load_digits_arrays()
    assert images.shape == (1797, 8, 8) and np.bincount(target).tolist()[:2] == [178, 182]


# -- fashion-mnist (MNIST's idx format) -----------------------------------------------------------

@pytest.mark.parametrize(("sub", "gz"), [("", True), ("FashionMNIST/raw", False)])
def test_fashion_mnist_reads_idx_files(tmp_path, sub, gz):
    arrays = fake_mnist(tmp_path / sub, gz=gz)
    d = load_dataset("fashion_mnist", root=str(tmp_path))
    assert d.name == "fashion_mnist" and d.n_classes == 10
    assert d.x_train.shape == (10, 1, 28, 28) and d.x_train.dtype == torch.float32
    assert torch.allclose(d.x_test[:, 0], torch.from_numpy(arrays[MNIST_FILES[2]]).float() / 255)
    assert d.y_test.tolist() == arrays[MNIST_FILES[3]].tolist()


def test_fashion_mnist_missing_says_where_and_never_downloads_offline(tmp_path, monkeypatch):
    import torchvision.datasets

    def no_download(*args, **kwargs):
        raise AssertionError("torchvision was asked to download under offline()")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", no_download)
    with offline(), pytest.raises(DatasetNotFoundError) as e:
        load_dataset("fashion_mnist", root=str(tmp_path / "fm"), download=True)
    assert "Fashion-MNIST not found" in str(e.value) and "scenario.download=true" in str(e.value)
    assert list(tmp_path.iterdir()) == []


# -- a file of tensors ----------------------------------------------------------------------------

def test_tensors_from_a_pt_file_with_x_and_y_are_split_and_scaled(tmp_path):
    x = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(50) % 5
    torch.save({"x": x, "y": y}, tmp_path / "mine.pt")
    d = load_dataset("tensors", root=str(tmp_path / "mine.pt"))
    assert (len(d.y_train), len(d.y_test)) == (40, 10) and d.n_classes == 5 and d.name == "mine"
    assert d.x_train.dtype == torch.float32 and 0 <= d.x_train.min() and d.x_train.max() <= 1
    # the seeded split of the pairs, uint8 divided by 255
    xs, ys, _, _ = seeded_split(x, y, test_fraction=0.2, seed=0)
    assert torch.equal(d.x_train, xs.float() / 255) and torch.equal(d.y_train, ys)


def test_tensors_from_an_npz_file_with_its_own_split_train_a_run(tmp_path):
    from clframe.config import compose
    from clframe.run.runner import run

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 6)) * 3
    y_tr, y_te = np.arange(200) % 4, np.arange(40) % 4
    np.savez(tmp_path / "blobs.npz", x_train=(centres[y_tr] + rng.normal(size=(200, 6))).astype(np.float32),
             y_train=y_tr, x_test=(centres[y_te] + rng.normal(size=(40, 6))).astype(np.float32), y_test=y_te)
    d = load_dataset("tensors", root=str(tmp_path / "blobs.npz"))
    assert d.x_train.shape == (200, 6) and d.x_test.shape == (40, 6) and d.n_classes == 4
    s = run(compose(["scenario.dataset=tensors", f"scenario.data_root={tmp_path / 'blobs.npz'}",
                     "scenario.n_experiences=2", "strategy=replay", "train.epochs=3", "logger.progress=false"]),
            tmp_path / "run")
    assert len(s["acc_matrix"]) == 2 and s["final_avg_acc"] > 0.6  # class-incremental, with replay


class NotATensor:
    pass


def test_tensors_never_unpickle_objects_and_name_what_is_missing(tmp_path):
    torch.save({"x": torch.zeros(3, 2), "y": NotATensor()}, tmp_path / "obj.pt")
    with pytest.raises(ConfigError, match="cannot be read as plain arrays"):
        load_dataset("tensors", root=str(tmp_path / "obj.pt"))
    np.savez(tmp_path / "obj.npz", x=np.array([object()] * 3, dtype=object), y=np.zeros(3))
    with pytest.raises(ConfigError, match="cannot be read as plain arrays"):
        load_dataset("tensors", root=str(tmp_path / "obj.npz"))
    np.savez(tmp_path / "keys.npz", inputs=np.zeros((3, 2)), labels=np.zeros(3))
    with pytest.raises(ConfigError, match=r"holds \['inputs', 'labels'\]; it needs x_train"):
        load_dataset("tensors", root=str(tmp_path / "keys.npz"))
    with pytest.raises(DatasetNotFoundError, match="no file at"):
        load_dataset("tensors", root=str(tmp_path / "absent.pt"))
    with pytest.raises(ConfigError, match="set scenario.data_root=<file>"):
        load_dataset("tensors")
