"""Start-up: a command imports only what it uses (each runs in a fresh interpreter, which then reports
the packages it imported), and a run records its time from the process start to its first step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# runs ``clframe <args>`` in this interpreter, then writes the names of the imported modules to a file
PROBE = """
import json, sys
from clframe.cli import main
out, args = sys.argv[1], sys.argv[2:]  # clframe run hands sys.argv to Hydra
try:
    main(args)
finally:
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
"""
# packages only some runs need: scenario=avalanche, logger.wandb=true, the delta-rule kernel on CUDA,
# hydra/launcher=submitit_*
OPTIONAL = ("avalanche", "wandb", "fla", "submitit")
# what training needs: Lightning, which imports torchmetrics (and so torchvision, matplotlib, scipy) and
# torch._dynamo (and so Triton); scikit-learn loads the digits. A command that does not train needs none.
TRAINING = ("lightning", "torchmetrics", "torchvision", "torch._dynamo", "matplotlib", "scipy", "triton", "sklearn")
TINY = ["scenario.n_experiences=2", "backbone.hidden=[16]", "train.epochs=1", "logger.progress=false",
        "train.num_threads=1"]


def imported(args: list[str], cwd: Path) -> set[str]:
    """The modules ``clframe <args>`` imports in a fresh interpreter (it must succeed)."""
    out = cwd / "modules.json"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(out), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(out.read_text()))


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (packages, or modules such as ``torch._dynamo``) are among ``modules``."""
    return sorted(n for n in names if n in modules)


@pytest.fixture(scope="module")
def validate_modules(tmp_path_factory) -> set[str]:
    return imported(["validate", "experiment=quickstart"], tmp_path_factory.mktemp("validate"))


def test_list_imports_no_training_stack_and_no_optional_package(tmp_path):
    modules = imported(["list"], tmp_path)
    assert "clframe.strategies.ewc" in modules  # every component was imported (their signatures are listed)
    assert loaded(modules, OPTIONAL + TRAINING) == []


def test_validate_imports_no_optional_package(validate_modules):
    assert loaded(validate_modules, OPTIONAL) == []


def test_validate_builds_the_run_without_lightning(validate_modules):
    # CLModule is a plain nn.Module; Lightning (and torchmetrics, torchvision, torch._dynamo with it) is
    # the engines' business
    assert loaded(validate_modules, ("lightning", "torchmetrics", "torchvision", "torch._dynamo")) == []


def test_a_run_imports_no_optional_package_and_records_its_startup(tmp_path):
    modules = imported(["run", "experiment=quickstart", "strategy=naive", *TINY, "hydra.run.dir=run"], tmp_path)
    assert loaded(modules, OPTIONAL) == []
    # one process trains through clframe's own loop: Lightning is for Fabric and Trainer.fit
    assert loaded(modules, ("lightning", "torchmetrics", "torchvision")) == []
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # counted from the process start (Linux), so the imports are in it; a run is far shorter than a minute here
    assert summary["startup_from"] == ("process" if Path("/proc/self/stat").exists() else "clframe.cli")
    assert 0.5 < summary["startup_s"] < 60


def test_the_plugin_api_imports_no_training_stack_and_no_optional_package(tmp_path):
    # a plug-in package imports clframe.api at its own import time: that must stay cheap
    out = tmp_path / "modules.json"
    code = f"import json, sys; import clframe.api; json.dump(sorted(sys.modules), open({str(out)!r}, 'w'))"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    modules = set(json.loads(out.read_text()))
    assert "clframe.api" in modules
    assert loaded(modules, OPTIONAL + TRAINING + ("hydra",)) == []
