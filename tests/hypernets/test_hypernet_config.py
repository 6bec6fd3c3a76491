"""Choosing a hypernetwork from the config, and turning it off."""

from __future__ import annotations

import pytest

from clframe.config import compose, validate
from clframe.errors import ConfigError
from clframe.run.runner import build


def test_no_hypernetwork_by_default_and_none_turns_an_experiments_off():
    assert validate(compose([]))["hypernet"] is None
    c = validate(compose(["experiment=hnet_permuted_digits", "hypernet=none", "strategy=naive", "head=multihead"]))
    assert c["hypernet"] is None
    built = build(c)
    assert not hasattr(built.module, "hypernet") and built.monitor("hypernet") is None
    assert any(p.requires_grad for p in built.module.backbone.parameters())  # trained directly


def test_the_experiment_builds_a_hypernetwork_whose_target_does_not_train():
    built = build(compose(["experiment=hnet_permuted_digits", "hypernet=hnet_rnn"]))
    hn = built.module.hypernet
    assert type(hn).__name__ == "HnetRNN" and hn.n_tasks == 5
    assert not any(p.requires_grad for p in built.module.backbone.parameters())
    trained = {id(p) for g in built.module.configure_optimizers().param_groups for p in g["params"]}
    assert trained == {id(p) for p in [*hn.core.parameters(), *hn.task_embs]}


def test_a_wrong_choice_or_key_names_the_valid_ones():
    with pytest.raises(ConfigError, match="hnet_mlp"):
        compose(["hypernet=hnet_lstm"])
    with pytest.raises(ConfigError, match="none"):
        compose(["hypernet=null"])
    with pytest.raises(ConfigError, match="Valid keys"):
        validate(compose(["hypernet=hnet_mlp", "+hypernet.chunk=3"]))
