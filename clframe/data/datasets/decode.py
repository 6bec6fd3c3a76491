"""Decoding folders of JPEG/PNG images into one uint8 tensor, once: the result is cached beside the data.

``decode_images`` turns image files into uint8 [N, 3, H, W] (grayscale and RGBA files become RGB) with
torchvision's decoders, in chunks on a few threads (the decoders release the GIL). ``cached_decode``
keeps what a dataset builds from its files in ``<root>/.clframe-<name>-<hash>.pt``; ``files_key`` makes
the key from the files' relative paths, labels, sizes and modification times, so a changed folder is
decoded again and the stale cache file replaced.

torchvision 0.29 deprecates its image decoders in favour of TorchCodec (a ``DeprecationWarning``, hidden by
default); they are what this module uses until TorchCodec is a dependency.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from clframe.data.offline import downloads_allowed
from clframe.errors import ConfigError, warn

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# bump when what a cache file holds changes, so that old files are decoded again
CACHE_VERSION = "1"
CHUNK = 256


def decode_one(path: Path) -> Tensor:
    """One JPEG or PNG file as uint8 [3, H, W] (RGB; a 16-bit PNG scaled to 8 bits)."""
    import torchvision.io as tio

    try:
        img = tio.decode_image(tio.read_file(str(path)), mode=tio.ImageReadMode.RGB)
    except RuntimeError as e:
        raise ConfigError(f"Cannot decode the image {path}: {str(e).strip().splitlines()[0]}") from None
    if img.dtype != torch.uint8:
        from torchvision.transforms.v2.functional import to_dtype

        img = to_dtype(img, torch.uint8, scale=True)
    return img


def decode_images(paths: Sequence[Path], size: tuple[int, int] | None = None,
                  threads: int | None = None) -> Tensor:
    """Decode image files into one uint8 tensor [N, 3, H, W], in the order of ``paths``.

    Args:
        paths: JPEG or PNG files (any of torchvision's formats); grayscale or RGBA become RGB.
        size: the (H, W) every image must have (default None: the first image's). Nothing is resized:
            an image of another size is a ``ConfigError`` naming it, its size and a file of the right one.
        threads: decoding threads (default: the CPU count, at most 8).
    """
    if not paths:
        h, w = size or (0, 0)
        return torch.empty(0, 3, h, w, dtype=torch.uint8)
    first = decode_one(paths[0])
    reference = paths[0] if size is None or tuple(first.shape[1:]) == tuple(size) else None
    h, w = size if size is not None else tuple(first.shape[1:])
    out = torch.empty(len(paths), 3, h, w, dtype=torch.uint8)

    def check(path: Path, img: Tensor) -> None:
        if tuple(img.shape[1:]) != (h, w):
            other = f"{reference} is {h}x{w}" if reference is not None else f"the images must be {h}x{w}"
            raise ConfigError(f"The images differ in size: {path} is {img.shape[1]}x{img.shape[2]} (HxW), "
                              f"but {other}. Resize them to one size first.")

    def run(start: int) -> None:
        for i in range(start, min(start + CHUNK, len(paths))):
            img = first if i == 0 else decode_one(paths[i])
            check(paths[i], img)
            out[i] = img

    n_threads = max(1, min(threads or min(8, os.cpu_count() or 1), -(-len(paths) // CHUNK)))
    starts = range(0, len(paths), CHUNK)
    if n_threads == 1:
        for s in starts:
            run(s)
    else:
        with ThreadPoolExecutor(n_threads) as pool:
            for _ in pool.map(run, starts):  # re-raises the first error
                pass
    return out


def files_key(root: Path, items: Iterable[tuple[Path, int]]) -> str:
    """A cache key for labelled files: each file's path relative to ``root``, label, size and mtime."""
    lines = []
    for path, label in items:
        st = path.stat()
        lines.append(f"{path.relative_to(root).as_posix()}\t{label}\t{st.st_size}\t{st.st_mtime_ns}")
    return "\n".join(lines)


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/clframe``, or ``~/.cache/clframe``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clframe"


def cache_paths(root: Path, name: str, key: str) -> list[tuple[Path, str]]:
    """Where ``cached_decode`` looks for and writes the cache file, in order, each with the glob of
    the same dataset's files there (older keys, removed once a new file is written)."""
    digest = hashlib.sha256(f"{CACHE_VERSION}\n{key}".encode()).hexdigest()[:16]
    # the user cache is shared by all roots: the root's path is part of the name there
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return [(root / f".clframe-{name}-{digest}.pt", f".clframe-{name}-*.pt"),
            (user_cache_dir() / f"{name}-{where}-{digest}.pt", f"{name}-{where}-*.pt")]


def load_cache(path: Path) -> dict[str, Tensor] | None:
    """The tensors saved in ``path``, or None when it is missing or unreadable (then it is decoded again)."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: decode again and overwrite it
        warn(f"ignoring the unreadable image cache {path} ({type(e).__name__}: {e}); decoding again.")
        return None
    return data if isinstance(data, dict) and all(isinstance(v, Tensor) for v in data.values()) else None


def save_cache(path: Path, pattern: str, data: dict[str, Tensor]) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file, then ``os.replace``) and remove the
    other files matching ``pattern`` beside it (caches of older contents); an ``OSError`` if it cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, RuntimeError):  # torch.save's failed write, e.g. a full disk
            raise OSError(str(e)) from e
        raise
    for old in path.parent.glob(pattern):
        if old != path:
            try:
                old.unlink()
            except OSError:
                pass


def cached_decode(root: Path, name: str, build: Callable[[], dict[str, Tensor]], key: str) -> dict[str, Tensor]:
    """``build()``'s tensors, decoded once and then loaded from a cache file.

    The file is ``<root>/.clframe-<name>-<hash of key>.pt``, or, when ``root`` is not writable,
    ``$XDG_CACHE_HOME/clframe/`` (default ``~/.cache/clframe/``); when neither can be written the
    tensors are decoded on every load (with one warning). Writing a new file removes the same dataset's
    files of older keys. Inside ``clframe.data.offline.offline()`` (``clframe validate``, which writes no
    data) a cache is read but not written. Files are loaded with ``torch.load(weights_only=True)``.

    Args:
        root: the dataset's folder.
        name: the dataset's name, part of the file name.
        build: decodes the files: name -> tensor.
        key: everything the tensors depend on (``files_key``: the files, their labels, sizes and times).
    """
    places = cache_paths(root, name, key)
    for path, _ in places:
        data = load_cache(path)
        if data is not None:
            return data
    data = build()
    if not downloads_allowed():
        return data
    failures = []
    for path, pattern in places:
        try:
            save_cache(path, pattern, data)
            return data
        except OSError as e:
            failures.append(f"{path.parent}: {e.strerror or e}")
    warn(f"cannot cache the decoded {name} images ({'; '.join(failures)}); they are decoded again on every load.")
    return data
