"""The UPGD strategy: it provides the optimizer with its own settings, and a run with it learns."""

from __future__ import annotations

import pytest
import torch
from clframe.strategies.upgd import UPGDStrategy
from torch import nn

from clframe.checkpoint.files import check_plain
from clframe.config import compose
from clframe.errors import ConfigError
from clframe.optim import UPGD
from clframe.run.runner import build, fit


def test_configure_optimizer_returns_upgd_with_the_strategy_settings():
    params = [nn.Parameter(torch.zeros(3, 2)), nn.Parameter(torch.zeros(3))]
    opt = UPGDStrategy(lr=0.2, weight_decay=0.01, beta_utility=0.9, sigma=0.1, protect=False, scaling="local",
                       eta_from="corrected").configure_optimizer(params)
    assert isinstance(opt, UPGD)
    group = opt.param_groups[0]
    assert group["params"] == params
    assert {k: group[k] for k in ("lr", "weight_decay", "beta_utility", "sigma", "protect", "scaling", "eta_from")} == {
        "lr": 0.2, "weight_decay": 0.01, "beta_utility": 0.9, "sigma": 0.1, "protect": False, "scaling": "local",
        "eta_from": "corrected"}


def test_a_bad_setting_names_its_config_key():
    with pytest.raises(ConfigError, match=r"'strategies\.upgd\.beta_utility' must be in \[0, 1\), got 1\.0"):
        build(compose(["strategy=upgd", "strategies.upgd.beta_utility=1.0"]))


def test_a_run_with_upgd_learns_the_first_experience(tiny):
    built = build(compose(tiny + ["strategy=upgd", "strategies.upgd.lr=0.1", "train.epochs=5",
                                  "monitors.continual.enabled=false"]))
    fit(built)
    module = built.module
    assert isinstance(module._optimizer, UPGD)
    assert module._optimizer.param_groups[0]["lr"] == 0.1  # its own lr, not train.lr
    n_classes = len(module.stream[0].classes_in_this_experience)
    assert module.acc_matrix[0][0] > 2.5 / n_classes  # well above chance
    state = module.training_state()["optimizer"]
    check_plain(state, "optimizer")
    assert all(s["step"] > 0 and torch.isfinite(s["utility"]).all() for s in state["state"].values())
