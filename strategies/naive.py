"""Naive fine-tuning: no protection against forgetting (the lower bound)."""

from __future__ import annotations

from clframe.plugin import Strategy
from clframe.registry import STRATEGIES


@STRATEGIES.register("naive")
class Naive(Strategy):
    """Plain SGD over the stream; every hook is a no-op."""
