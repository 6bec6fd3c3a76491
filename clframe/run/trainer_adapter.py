"""``Trainer.fit`` for a ``CLModule``: a ``LightningModule`` that holds the module and hands every
Lightning hook to it. ``CLModule`` itself is a plain ``nn.Module`` (it builds and validates without
Lightning); only a run under ``trainer.engine=trainer`` (or ``auto`` with several processes) uses this."""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from clframe.core.module import CLModule
from clframe.data.batch import Batch
from clframe.run.progress import progress_metrics


class LightningCL(L.LightningModule):
    """The ``LightningModule`` that ``Trainer.fit`` trains: ``module``'s own step and hooks, manual
    optimization, backpropagation through Lightning (its strategy and precision plugins, DDP's hooks).

    Args:
        module: the continual learner; registered as ``cl``, it moves and is wrapped with this one.
    """

    def __init__(self, module: CLModule) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cl = module
        module.backward_loss = self.manual_backward

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        self.cl.training_step(batch, batch_idx)

    def configure_optimizers(self) -> torch.optim.Optimizer | None:
        return self.cl.configure_optimizers()

    def on_fit_start(self) -> None:
        self.cl.on_fit_start()

    def on_train_epoch_end(self) -> None:
        self.cl.on_train_epoch_end()

    def on_train_end(self) -> None:
        self.cl.on_train_end()

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # scenario data already lives on the device; skip Lightning's generic collection walk
        if isinstance(batch, Batch):
            return batch if batch.x.device == device else dataclasses.replace(
                batch, x=batch.x.to(device), y=batch.y.to(device), t=batch.t.to(device),
                weight=None if batch.weight is None else batch.weight.to(device))
        return super().transfer_batch_to_device(batch, device, dataloader_idx)


class StreamProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar showing stream progress instead of epochs."""

    def __init__(self, refresh_rate: int = 10) -> None:
        super().__init__(refresh_rate=refresh_rate)

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        return progress_metrics(pl_module.cl)  # the Trainer trains the adapter, LightningCL

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description("clframe")
