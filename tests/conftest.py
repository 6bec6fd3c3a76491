"""Shared fixtures. Tests run on CPU, offline, and fast."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# shared test helpers (tests/cli_helpers.py) are imported by name
sys.path.insert(0, str(Path(__file__).parent))

os.environ.setdefault("WANDB_MODE", "offline")
# Without a GPU, Triton kernels run in the interpreter on the CPU (read when a kernel is defined, so
# set here, before any test imports a kernel module)
if not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("WANDB_SILENT", "true")

# Small, fast settings for end-to-end runs: 2 experiences of split digits, tiny MLP.
TINY = [
    "scenario.n_experiences=2",
    "backbone.hidden=[32]",
    "train.epochs=1",
    "logger.progress=false",
]


@pytest.fixture
def tiny() -> list[str]:
    """Overrides for a run that trains in well under a second."""
    return list(TINY)


@pytest.fixture(autouse=True)
def _quiet_and_single_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def user_package(tmp_path, monkeypatch) -> Iterator[Callable[[dict[str, str]], str]]:
    """Factory for a user's package: ``user_package({"nets.py": source})`` writes a uniquely named
    package under ``tmp_path / "src"``, puts it on ``sys.path`` and returns its name. Its modules are
    dropped from ``sys.modules`` afterwards, so no test sees another's."""
    made: list[str] = []

    def make(files: dict[str, str]) -> str:
        pkg = f"userpkg_{uuid.uuid4().hex[:8]}"
        (tmp_path / "src" / pkg).mkdir(parents=True)
        (tmp_path / "src" / pkg / "__init__.py").write_text("")
        for name, body in files.items():
            (tmp_path / "src" / pkg / name).write_text(body)
        monkeypatch.syspath_prepend(str(tmp_path / "src"))
        made.append(pkg)
        return pkg

    yield make
    for name in [m for m in sys.modules if m.split(".")[0] in made]:
        del sys.modules[name]
