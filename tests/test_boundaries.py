"""scenario.boundaries=hidden: strategies get no experience events (evaluation still knows the experiences),
a strategy that needs them is refused by name, and task-free strategies train as before."""

from __future__ import annotations

import pytest

from clframe.config import compose
from clframe.config.registry import STRATEGIES
from clframe.errors import ConfigError
from clframe.run.runner import build, fit, run

TINY = ["experiment=split_digits", "train.epochs=1", "logger.progress=false"]
NEEDS = {"ewc": [], "si": [], "mas": [], "lwf": [], "agem": [], "gem": [], "icarl": [], "gdumb": [], "bic": [],
         "replay": ["strategies.replay.buffer=class_balanced"],
         "shrink_perturb": ["strategies.shrink_perturb.when=experience"],
         "hnet_reg": ["experiment=hnet_split_digits_cil"]}


def test_every_strategy_that_needs_boundaries_is_listed_here():
    declared = {n for n in STRATEGIES.names() if STRATEGIES.get(n).needs_boundaries}
    assert declared <= set(NEEDS), declared - set(NEEDS)


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_hidden_boundaries_refuse_a_strategy_that_needs_them_by_name(name):
    built = build(compose([*TINY, *NEEDS[name], "scenario.boundaries=hidden", f"strategy={name}"]))
    with pytest.raises(ConfigError, match=rf"strategy '{name}' needs the experience boundaries: .+scenario\.boundaries"
                                          r"=hidden.+Set scenario\.boundaries=known"):
        fit(built)


def test_hidden_boundaries_keep_the_accuracy_matrix_and_train_task_free_replay(tmp_path):
    known = run(compose([*TINY, "strategy=replay"]), tmp_path / "known")
    hidden = run(compose([*TINY, "strategy=replay", "scenario.boundaries=hidden"]), tmp_path / "hidden")
    assert len(hidden["acc_matrix"]) == 5  # one row per experience: evaluation still knows them
    # reservoir replay uses no boundary: the same run either way
    assert hidden["acc_matrix"] == known["acc_matrix"]


def test_a_wrong_value_names_the_choices():
    with pytest.raises(ConfigError, match="'scenario.boundaries' must be 'known' .* or 'hidden'"):
        build(compose([*TINY, "scenario.boundaries=sometimes"]))
