"""Naive fine-tuning: no protection against forgetting (the lower bound)."""

from __future__ import annotations

from clframe.config.registry import STRATEGIES
from clframe.core.strategy import Strategy


@STRATEGIES.register("naive")
class Naive(Strategy):
    """Plain SGD over the stream; every hook is a no-op."""
