"""Optimizers that strategies return from ``configure_optimizer``."""

from clframe.optim.upgd import UPGD

__all__ = ["UPGD"]
