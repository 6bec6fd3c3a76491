"""Which engine trains a run: ``trainer.engine=auto`` (the default) is clframe's own loop for one
process and Lightning's ``Trainer.fit`` for several; an explicit choice is kept; every engine trains
the same numbers."""

from __future__ import annotations

import pytest

import clframe.run.engines as engines
from clframe.config import compose
from clframe.errors import ConfigError
from clframe.run.build import build, engine
from clframe.run.results import TIMING_KEYS
from clframe.run.runner import run


@pytest.mark.parametrize("overrides, expected", [
    ([], "loop"),
    (["trainer.engine=trainer"], "trainer"),
    (["trainer.devices=2", "trainer.strategy=ddp"], "trainer"),
    (["trainer.strategy=ddp"], "trainer"),  # DDP asked for on one process: the Trainer runs it
    (["trainer.engine=fabric"], "fabric"),
    (["trainer.engine=loop"], "loop"),
])
def test_auto_is_the_loop_for_one_process_and_the_trainer_for_several(overrides, expected, monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    c = compose(overrides)
    assert engine({k: c["trainer"][k] for k in c["trainer"]}) == expected


def test_a_default_run_trains_through_the_loop_not_fabric_or_the_trainer(tiny, tmp_path, monkeypatch):
    used = []
    real = engines.fit_loop
    monkeypatch.setattr(engines, "fit_loop", lambda *a, **k: (used.append("loop"), real(*a, **k)))
    monkeypatch.setattr(engines, "fit_fabric", lambda *a, **k: pytest.fail("Fabric ran a default run"))
    monkeypatch.setattr(engines, "fit_trainer", lambda *a, **k: pytest.fail("Trainer.fit ran a one-process run"))
    summary = run(compose(tiny), tmp_path / "run")
    assert used == ["loop"]
    assert len(summary["acc_matrix"]) == len(summary["acc_matrix"][0])  # it trained every experience


@pytest.mark.parametrize("strategy", ["naive", "replay", "ewc"])
def test_every_engine_trains_the_same_numbers(tiny, tmp_path, strategy):
    out = {e: run(compose(tiny + [f"strategy={strategy}", f"trainer.engine={e}", "backbone.dropout=0.2"]),
                  tmp_path / e) for e in ("loop", "fabric", "trainer")}
    same = [{k: v for k, v in s.items() if k not in TIMING_KEYS} for s in out.values()]
    assert same[0] == same[1] == same[2]


@pytest.mark.parametrize("name", ["loop", "fabric"])
def test_a_one_process_engine_refuses_several_processes(name):
    with pytest.raises(ConfigError, match=f"trainer.engine={name} runs one process; use trainer.engine=trainer"):
        build(compose([f"trainer.engine={name}", "trainer.devices=2", "trainer.strategy=ddp"]))
