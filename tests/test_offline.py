"""Guarding downloads: refused connections, no stray directories, and the offline switch of validate."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest

from clframe.data.offline import downloads_allowed, no_network, offline, offline_hint
from clframe.errors import DatasetNotFoundError

HINT = "put it under data/x (scenario.data_root) or allow the download with scenario.download=true"


def originals() -> tuple:
    return socket.getaddrinfo, socket.create_connection, socket.socket.connect, os.mkdir


def download_with_retries() -> None:
    """Like torchvision: try every mirror, catch the failure, note it, give up with a RuntimeError."""
    for mirror in ("http://mirror-a.invalid/", "https://mirror-b.invalid/"):
        try:
            urllib.request.urlopen(mirror + "train.gz", timeout=1)
        except Exception as e:
            print(f"Failed to download (trying next): {e}")
    raise RuntimeError("Error downloading train.gz")


def test_a_refused_download_is_one_dataset_error_and_prints_nothing(capsys):
    with pytest.raises(DatasetNotFoundError) as e:
        with no_network("Benchmark 'x:Y'", HINT):
            download_with_retries()
    msg = str(e.value)
    assert msg.startswith("Benchmark 'x:Y' is missing its data") and "mirror-a.invalid" in msg
    assert msg.endswith(f"To get the data, {HINT}.") and "\n" not in msg
    out = capsys.readouterr()
    assert out.out == out.err == ""


@pytest.mark.parametrize("attempt", [
    lambda: socket.getaddrinfo("example.invalid", 80),
    lambda: socket.create_connection(("example.invalid", 80)),
    lambda: socket.socket().connect(("127.0.0.1", 9)),
])
def test_every_way_to_connect_is_refused_and_restored(attempt):
    before = originals()
    with pytest.raises(DatasetNotFoundError):
        with no_network("data", HINT):
            attempt()
    assert originals() == before and "connect" not in vars(socket.socket)


def test_socket_functions_are_restored_after_any_error():
    before = originals()
    with pytest.raises(ValueError, match="unrelated"):  # not a download: passed through unchanged
        with no_network("data", HINT):
            raise ValueError("unrelated")
    assert originals() == before and "connect" not in vars(socket.socket)
    with no_network("data", HINT):
        pass
    assert originals() == before


def test_local_sockets_still_connect(tmp_path):
    with no_network("data", HINT), socket.socket(socket.AF_UNIX) as s:
        with pytest.raises(OSError) as e:
            s.connect(str(tmp_path / "no-such-socket"))
    assert not isinstance(e.value, DatasetNotFoundError)


def test_a_refused_download_leaves_no_new_directories(tmp_path):
    root = tmp_path / "data" / "avalanche"
    with pytest.raises(DatasetNotFoundError):
        with no_network("MNIST", HINT, root=root):
            os.makedirs(root / "MNIST" / "raw")
            (root / "other").mkdir()
            socket.getaddrinfo("example.invalid", 443)
    assert list(tmp_path.iterdir()) == []


def test_only_new_empty_directories_are_removed(tmp_path):
    (tmp_path / "kept_empty").mkdir()
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(DatasetNotFoundError):
        with no_network("MNIST", HINT, root=tmp_path):
            os.makedirs(tmp_path / "MNIST" / "raw")
            (tmp_path / "partial").mkdir()
            (tmp_path / "partial" / "file.gz").write_text("x")
            os.makedirs(tmp_path.parent / f"{tmp_path.name}-outside")
            socket.getaddrinfo("example.invalid", 443)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept_empty", "old.txt", "partial"]
    assert (tmp_path / "partial" / "file.gz").exists()
    assert (tmp_path.parent / f"{tmp_path.name}-outside").is_dir()  # outside root: left alone


def test_offline_switch_forbids_downloads_and_says_so():
    assert downloads_allowed() and offline_hint() == ""
    with offline():
        with offline():
            assert not downloads_allowed()
        assert not downloads_allowed()
        assert "clframe validate" in offline_hint() and "clframe run" in offline_hint()
        with pytest.raises(DatasetNotFoundError, match=r"`clframe validate` never downloads.*clframe run"):
            with no_network("MNIST", HINT):
                socket.getaddrinfo("example.invalid", 443)
    assert downloads_allowed()
