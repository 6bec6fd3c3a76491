"""Guarding downloads: no network and no stray directories unless the user asked for a download.

``no_network(what, allow_hint, root)`` wraps code that may download (an Avalanche benchmark
factory, a torchvision dataset): the first connection attempt inside it stops that code and
becomes a one-line ``DatasetNotFoundError``, and the directories the code created at or under
``root`` (and root's missing parents) for the refused download are removed again.

``offline()`` is the process-wide switch for ``clframe validate``, which builds a config but
must not download or write data: the command runs inside it, e.g.
``with offline(): build(cfg)``. While it is active ``downloads_allowed()`` is False, so
datasets and benchmarks never download, even with ``scenario.download=true``, and their
missing-data errors end with ``offline_hint()``, which says that ``clframe run`` does.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clframe.errors import DatasetNotFoundError

_offline_depth = 0
_MISSING = object()


class _NetworkRefused(BaseException):
    # a BaseException: the retry loops of urllib and torchvision catch OSError, URLError or
    # Exception, and would otherwise swallow it, print "trying next mirror" and try again
    pass


def downloads_allowed() -> bool:
    """Whether datasets may download: False inside ``offline()`` (``clframe validate``)."""
    return _offline_depth == 0


@contextmanager
def offline() -> Iterator[None]:
    """Forbid every download in this process while active (nestable)."""
    global _offline_depth
    _offline_depth += 1
    try:
        yield
    finally:
        _offline_depth -= 1


def offline_hint() -> str:
    """The sentence a missing-data error appends inside ``offline()``; ``""`` outside it."""
    if downloads_allowed():
        return ""
    return (" `clframe validate` never downloads, even with scenario.download=true; "
            "`clframe run ... scenario.download=true` does.")


def _host(address: Any) -> str:
    # getaddrinfo gets a host, create_connection and connect a (host, port, ...) tuple
    return str(address[0] if isinstance(address, tuple) else address)


def _highest_missing(root: Path) -> Path:
    # everything created at or under this path while the guard is active is new
    while not root.parent.exists() and root.parent != root:
        root = root.parent
    return root


@contextmanager
def no_network(what: str, allow_hint: str, root: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Run the block with network connections refused; a refused one raises ``DatasetNotFoundError``.

    Args:
        what: what was being built, named first in the message (e.g. "Avalanche benchmark 'x:Y'").
        allow_hint: how to get the data, completing "To get the data, ..." (e.g. "put it under
            data/avalanche (scenario.data_root) or allow the download with scenario.download=true").
        root: after a refused download, the empty directories created at or under ``root`` and
            its missing parents during the block are removed (default None: remove none).
    """
    refused: list[str] = []
    created: list[str] = []
    top = str(_highest_missing(Path(root).absolute())) if root is not None else None
    real_connect, real_mkdir = socket.socket.connect, os.mkdir

    def refuse(address: Any, *args: Any, **kwargs: Any) -> Any:
        refused.append(_host(address))
        raise _NetworkRefused

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        real_connect(sock, address)

    def mkdir(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real_mkdir(path, mode, dir_fd=dir_fd)
        if dir_fd is None:
            created.append(os.path.abspath(os.fsdecode(path)))

    patches = [(socket, "getaddrinfo", refuse), (socket, "create_connection", refuse),
               (socket.socket, "connect", connect), (os, "mkdir", mkdir)]
    saved = [(obj, name, vars(obj).get(name, _MISSING)) for obj, name, _ in patches]
    for obj, name, fn in patches:
        setattr(obj, name, fn)
    try:
        yield
    except BaseException as e:
        if not (isinstance(e, _NetworkRefused) or (refused and isinstance(e, Exception))):
            raise
        # children were created after their parents, and rmdir refuses non-empty directories
        for path in reversed(created):
            if top is not None and (path == top or path.startswith(top + os.sep)):
                try:
                    os.rmdir(path)
                except OSError:
                    pass
        raise DatasetNotFoundError(
            f"{what} is missing its data and tried to download it from {refused[0]}, but downloading "
            f"is off. To get the data, {allow_hint}.{offline_hint()}"
        ) from None
    finally:
        for obj, name, value in saved:
            if value is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, value)
