"""Mixed precision for the training step, owned by the module so it is the same under every engine
(clframe's loop, Fabric, Lightning's Trainer) and every strategy sees the same contract: the forward pass
and the loss terms autocast, the weights, gradients and strategy states stay float32, and the
gradients a strategy reads are unscaled."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor

DTYPES = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class Precision:
    """``trainer.precision``: ``32-true`` (default), ``bf16-mixed`` (autocast to bfloat16; no loss
    scaling, bfloat16 has float32's range) or ``16-mixed`` (autocast to float16 with a
    ``torch.amp.GradScaler``, made on the loss's device at the first step).

    Args:
        name: one of ``DTYPES`` (default ``32-true``).
    """

    def __init__(self, name: str = "32-true") -> None:
        if name not in DTYPES:
            raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got '{name}'")
        self.name, self.dtype = name, DTYPES[name]
        self.scaler: torch.amp.GradScaler | None = None
        self._pending: dict[str, Any] = {}  # a resumed scaler's state, applied when it is made
        self.skipped = False  # whether the last step was skipped for inf/NaN gradients (16-mixed)

    def autocast(self, device: torch.device) -> AbstractContextManager[Any]:
        """The context the forward pass and loss terms run in."""
        return nullcontext() if self.dtype is None else torch.autocast(device.type, dtype=self.dtype)

    def scale(self, loss: Tensor) -> Tensor:
        """The loss to backpropagate (scaled under ``16-mixed``)."""
        if self.dtype is not torch.float16:
            return loss
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler(loss.device.type)
            if self._pending:
                self.scaler.load_state_dict(self._pending)
        return self.scaler.scale(loss)

    def unscale(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Divide the gradients by the loss scale in place, before the strategies read them. The scaler
        has then noted whether any is inf/NaN (the step will be skipped); those entries are zeroed, so a
        strategy that accumulates gradients (SI) adds nothing for a step that does not happen."""
        if self.scaler is not None and optimizer is not None:
            self.scaler.unscale_(optimizer)
            for g in optimizer.param_groups:
                for p in g["params"]:
                    if p.grad is not None:
                        p.grad.nan_to_num_(0.0, 0.0, 0.0)

    def unscale_grads(self, params: list[Tensor]) -> None:
        """The same for parameters a strategy updates with an optimizer of its own (SCR's projection
        head), which the module's scaler does not see: their gradients divided by the loss scale, inf/NaN
        zeroed. Under ``32-true`` and ``bf16-mixed`` nothing happens."""
        if self.scaler is None:
            return
        inv = 1.0 / self.scaler.get_scale()
        for p in params:
            if p.grad is not None:
                p.grad.mul_(inv).nan_to_num_(0.0, 0.0, 0.0)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step; under ``16-mixed`` skipped when a gradient was inf/NaN (the scale then
        shrinks; ``skipped`` says so), and the gradients are zeroed so the strategies that read them after
        the step see no update."""
        if self.scaler is None:
            optimizer.step()
            return
        before = self.scaler.get_scale()  # one host read; scaler.step reads the inf flags anyway
        self.scaler.step(optimizer)
        self.scaler.update()
        self.skipped = self.scaler.get_scale() < before
        if self.skipped:
            optimizer.zero_grad(set_to_none=False)

    def state_dict(self) -> dict[str, Any]:
        """The loss scaler's state (empty without one)."""
        return {} if self.scaler is None else dict(self.scaler.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if self.scaler is None:
            self._pending = dict(state)
        else:
            self.scaler.load_state_dict(state)
