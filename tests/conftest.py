"""Shared fixtures. Tests run on CPU, offline, and fast."""

from __future__ import annotations

import os
import sys
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
