"""A reservoir buffer that also keeps each sample's model outputs from when it was stored (DER, DER++),
and draws without replacement, as Mammoth's ``Buffer.get_data`` does (DER, DER++, ER-ACE)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from clframe.core.hooks import overrides
from clframe.data.buffers import Buffer, ReservoirBuffer
from clframe.errors import ConfigError
from clframe.models.protocols import GeneratesWeights


def draw(buffer: Buffer, n: int) -> Tensor:
    """Indices of ``min(n, buffer.size)`` distinct stored samples, uniformly at random, on the
    buffer's device (no host sync: ``buffer.size`` is a host int). The buffer must be non-empty."""
    perm = torch.randperm(buffer.size, generator=buffer.gen, device=buffer.x.device)
    return perm[:n]


class LogitReservoir(ReservoirBuffer):
    """``ReservoirBuffer`` plus ``z``: the outputs the model gave each sample when it was offered.
    With the same seed it stores the same samples as ``ReservoirBuffer`` (same draws, same slots).

    Args:
        capacity: maximum number of stored samples.
        seed: seed of the buffer's own random generator (default 0).
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        super().__init__(capacity, seed)
        self.z: Tensor | None = None

    def add(self, x: Tensor, y: Tensor, t: Tensor, z: Tensor | None = None) -> None:
        """Offer a batch with its outputs ``z`` [B, ...], as if its samples arrived one by one."""
        if z is None:
            raise ValueError("LogitReservoir.add needs the batch's outputs z")
        self._alloc(x, y, t)
        if self.z is None:
            self.z = z.new_zeros((self.capacity + 1, *z.shape[1:]), dtype=torch.float32)  # float32 under autocast too
        slot = self.take_slots(len(y), y.device)
        self.x[slot], self.y[slot], self.t[slot], self.z[slot] = x, y, t, z.detach().to(self.z.dtype)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.z is not None:
            state["z"] = self.z
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.z = state.get("z")


def check_replay_setup(module: Any, strategy: object) -> None:
    """Raise ``ConfigError`` if another of ``module``'s strategies also rewrites the batch
    (``before_forward``, e.g. ``replay``): two replay methods in one step are not a meaningful
    combination, and a later one would drop this one's loss weights and count its drawn samples as new.
    Also when the model is a hypernetwork and the stream has several task labels: its training batch
    must hold one task, and drawn samples come from any task."""
    strategies = getattr(module, "strategies", {})
    me = next((k for k, s in strategies.items() if s is strategy), type(strategy).__name__.lower())
    others = [k for k, s in strategies.items() if s is not strategy and overrides(s, "before_forward")]
    if others:
        raise ConfigError(f"strategy '{me}' replays samples from its own buffer and cannot be combined with "
                          f"'{others[0]}', which also adds samples to the batch (two replay methods in one step). "
                          f"Use one of them; '{me}' combines with strategies that do not rewrite the batch "
                          f"(e.g. strategy=[{me},ewc]).")
    tasks = {e.task_label for e in getattr(module, "stream", [])}
    if len(tasks) > 1 and isinstance(getattr(module, "model", None), GeneratesWeights):
        raise ConfigError(f"strategy '{me}' replays samples of every task in one batch, but this run's model is a "
                          f"hypernetwork, whose training batch must hold one task label ({len(tasks)} tasks here). "
                          "Use hypernet=none, or a hypernetwork's own regulariser (strategy=hnet_reg).")
