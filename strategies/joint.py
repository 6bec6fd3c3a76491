"""Joint training, the offline upper bound: every experience's data at once, shuffled together."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from clframe.config.registry import STRATEGIES
from clframe.core.hooks import EVENTS, overrides
from clframe.core.strategy import Strategy
from clframe.data.batch import Batch
from clframe.data.stream import TensorData
from clframe.errors import ConfigError
from clframe.run.distributed import rank

# what a strategy may do to a run; one that overrides none of these (naive) leaves joint training alone
HOOKS = (*EVENTS, "setup", "before_forward", "loss_terms", "lr_factor", "configure_optimizer", "eval_model")


@STRATEGIES.register("joint")
class Joint(Strategy):
    """Train once on the union of every experience's training data: ``epochs`` passes over the union,
    shuffled as one set, with the run's batch size and a constant learning rate, then evaluate on every
    experience. Avalanche 0.6's ``JointTraining`` (``avalanche/training/supervised/joint_training.py``),
    the offline upper bound of every continual-learning table (e.g. van de Ven & Tolias 2019; Buzzega
    et al. 2020 "Joint").

    The stream's iterator still walks the experiences in order, ``epochs`` times ``|D_i|`` samples
    each: ``epochs * |D_0 + ... + D_T|`` samples over the whole run, exactly the number joint training
    draws. Each batch is replaced by the next samples of a walk through seeded permutations of the
    union (one per pass), so the run is ``epochs`` passes over the shuffled union; only the batch sizes
    are the iterator's (a short batch at each experience's epoch end instead of one per pass). The
    accuracy-matrix rows before the last are the joint model part-way through its training, not after
    an experience: forgetting and the stability gap mean nothing here; read the final row.

    Refused: another strategy that changes training (joint is the upper bound alone), an ordered stream
    (a time series is not shuffled), and ``train.reset_optimizer=true`` (joint training is one
    experience; the optimizer state would be cleared mid-way).

    Args:
        seed: seed of the union's per-pass shuffles (default 0).

    Under multi-process training every rank walks the same permutation and takes its share of each
    global batch (``Batch.shares``), as the iterator does.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.consumed = 0  # samples of the joint walk drawn so far, over all ranks
        self.data: TensorData | None = None
        self._orders: dict[int, Tensor] = {}

    def setup(self, module: Any) -> None:
        others = [k for k, s in module.strategies.items() if s is not self and any(overrides(s, h) for h in HOOKS)]
        if others:
            raise ConfigError(f"strategy=joint trains on the whole stream at once, the upper bound alone; it cannot "
                              f"be combined with {others}, which act on experiences or batches. Run joint as a "
                              "strategy of its own (strategy=joint).")
        if module.reset_optimizer:
            raise ConfigError("strategy=joint is one training run over the union of the experiences; "
                              "train.reset_optimizer=true would clear the optimizer state at every experience "
                              "start, part-way through it. Set train.reset_optimizer=false.")
        if module.stream.ordered:
            raise ConfigError("strategy=joint shuffles every experience's samples together, but this stream is "
                              "ordered (a time series whose order the iterator keeps). Use a scenario with "
                              "independent samples.")
        parts = [(e.train.x, e.train.y, e.train.t) for e in module.stream]
        self.data = TensorData(*(torch.cat(p) for p in zip(*parts)))  # [N, ...] on the scenario's device
        self._orders = {}

    def _order(self, epoch: int) -> Tensor:
        """The permutation of pass ``epoch`` over the union (the last two are kept)."""
        if epoch not in self._orders:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.data), generator=g).to(self.data.y.device)
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1} | {epoch: order}
        return self._orders[epoch]

    def _indices(self, start: int, size: int) -> Tensor:
        """Positions ``start .. start + size`` of the walk, as indices of the union (at most two passes)."""
        n = len(self.data)
        epoch, i = divmod(start, n)
        first = self._order(epoch)[i: i + size]
        return first if i + size <= n else torch.cat([first, self._order(epoch + 1)[: i + size - n]])

    def before_forward(self, batch: Batch, module: Any) -> Batch:
        shares = batch.shares
        if shares is None:
            start, size, total = self.consumed, len(batch), len(batch)
        else:
            r = rank()
            start, size, total = self.consumed + sum(shares[:r]), shares[r], sum(shares)
            # a rank without a share keeps in step with one repeated sample, as the iterator's batch does
            size = max(size, 1)
        self.consumed += total
        idx = self._indices(start, size)
        return Batch(self.data.x[idx], self.data.y[idx], self.data.t[idx], batch.exp, shares=shares)

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consumed = int(state["consumed"])
