"""Which engine trains a run: ``trainer.engine=auto`` (the default) is Fabric for one process and
Lightning's ``Trainer.fit`` for several; an explicit choice is kept."""

from __future__ import annotations

import pytest

import clframe.run.engines as engines
from clframe.config import compose
from clframe.run.build import engine
from clframe.run.runner import run


@pytest.mark.parametrize("overrides, expected", [
    ([], "fabric"),
    (["trainer.engine=trainer"], "trainer"),
    (["trainer.devices=2", "trainer.strategy=ddp"], "trainer"),
    (["trainer.strategy=ddp"], "trainer"),  # DDP asked for on one process: the Trainer runs it
    (["trainer.engine=fabric"], "fabric"),
])
def test_auto_engine_is_fabric_for_one_process_and_the_trainer_for_several(overrides, expected, monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    c = compose(overrides)
    assert engine({k: c["trainer"][k] for k in c["trainer"]}) == expected


def test_a_default_run_trains_through_fabric_not_the_trainer(tiny, tmp_path, monkeypatch):
    used = []
    real = engines.fit_fabric
    monkeypatch.setattr(engines, "fit_fabric", lambda *a, **k: (used.append("fabric"), real(*a, **k)))
    monkeypatch.setattr(engines.L, "Trainer", lambda *a, **k: pytest.fail("Trainer.fit ran a one-process run"))
    summary = run(compose(tiny), tmp_path / "run")
    assert used == ["fabric"]
    assert len(summary["acc_matrix"]) == len(summary["acc_matrix"][0])  # it trained every experience
