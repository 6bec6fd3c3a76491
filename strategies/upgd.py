"""UPGD (Elsayed & Mahmood, 2024): utility-gated gradient steps and noise, as the optimizer."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from annotated_types import Ge
from torch import nn

from clframe.config.registry import STRATEGIES, ParamError
from clframe.core.strategy import Strategy
from clframe.optim import UPGD


@STRATEGIES.register("upgd")
class UPGDStrategy(Strategy):
    """Train with ``clframe.optim.UPGD`` instead of the configured optimizer (``train.optimizer``,
    ``train.lr``, ``train.momentum`` and ``train.weight_decay`` are then unused). No
    experience boundaries are needed: it works on boundary-free streams.

    Args:
        lr: learning rate (default 0.01).
        weight_decay: decoupled weight decay, multiplied by ``lr`` (default 0.0).
        beta_utility: decay of the utility average, in [0, 1) (default 0.999).
        sigma: standard deviation of the perturbation noise (default 0.001).
        protect: gate the gradient and the noise (``True``, "protecting" UPGD) or only the
            noise (``False``) (default True).
        scaling: ``global`` (utilities over the network-wide maximum) or ``local``
            (normalised per parameter) (default ``global``).
        eta_from: whether the global maximum is taken from the ``uncorrected`` utilities
            (the authors' code) or the bias-``corrected`` ones (the paper) (default ``uncorrected``).
    """

    def __init__(
        self,
        lr: Annotated[float, Ge(0)] = 0.01,
        weight_decay: Annotated[float, Ge(0)] = 0.0,
        beta_utility: float = 0.999,
        sigma: Annotated[float, Ge(0)] = 0.001,
        protect: bool = True,
        scaling: Literal["global", "local"] = "global",
        eta_from: Literal["uncorrected", "corrected"] = "uncorrected",
    ) -> None:
        if not 0 <= beta_utility < 1:
            raise ParamError("beta_utility", f"must be in [0, 1), got {beta_utility}",
                             "The bias correction divides by 1 - beta_utility^t (default 0.999).")
        self.settings = dict(lr=lr, weight_decay=weight_decay, beta_utility=beta_utility, sigma=sigma,
                             protect=protect, scaling=scaling, eta_from=eta_from)

    def configure_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return UPGD(params, **self.settings)
