"""The engines that drive ``CLModule.training_step`` over the stream (``trainer.engine``):

- ``loop``: clframe's own loop, for one process on one device (the default there, ``auto``): no
  per-step machinery but the module's, and no Lightning import (2.4 s of start-up);
- ``fabric``: the same loop set up by Lightning Fabric (one process; Fabric's accelerator and
  precision plugins, backpropagation through Fabric);
- ``trainer``: Lightning's ``Trainer.fit`` through ``clframe.run.trainer_adapter`` (several processes,
  DDP, Lightning callbacks; the default for several processes).

All run the same step; the module sends every event to the strategies and monitors itself.
"""

from __future__ import annotations

from typing import Any

import torch

from clframe.core.module import CLModule
from clframe.data.curriculum import CurriculumIterator
from clframe.data.iterator import StreamIterator
from clframe.errors import StoppedBetweenSteps
from clframe.run.build import Built, device_for, engine
from clframe.run.progress import progress_metrics


def fit(built: Built, callbacks: list | None = None) -> None:
    """Train ``built.module`` over the whole stream with the configured engine.

    Args:
        built: what ``build`` returned.
        callbacks: extra Lightning callbacks (default None). Under ``Trainer.fit`` they get every
            Lightning hook, with the adapter (``clframe.run.trainer_adapter.LightningCL``, the module
            as ``.cl``) as ``pl_module``; under ``loop`` and ``fabric`` only ``on_train_start``,
            ``on_train_batch_end`` and ``on_train_end``, with ``trainer=None`` and the module itself.
    """
    tn, progress = built.config["trainer"], built.config["logger"]["progress"]
    chosen = engine(tn)
    if chosen == "loop":
        fit_loop(built.module, built.loader, tn["accelerator"], progress, callbacks)
    elif chosen == "fabric":
        fit_fabric(built.module, built.loader, tn["accelerator"], progress, callbacks)
    else:
        fit_trainer(built, progress, callbacks)


def fit_loop(
    module: CLModule, loader: StreamIterator | CurriculumIterator, accelerator: str, progress: bool = True,
    callbacks: list[Any] | None = None
) -> None:
    """clframe's own loop drives the module's ``training_step`` on the device of ``accelerator``
    (one process): plain autograd, the optimizer the module configures."""
    module.to(device_for(accelerator))
    module.configure_optimizers()
    _loop(module, loader, progress, callbacks or [])


def fit_fabric(
    module: CLModule, loader: StreamIterator | CurriculumIterator, accelerator: str, progress: bool = True,
    callbacks: list[Any] | None = None
) -> None:
    """Lightning Fabric sets up the module and its optimizer and backpropagates; the loop is
    ``fit_loop``'s (one process)."""
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator=accelerator, devices=1)
    optimizer = module.configure_optimizers()
    if optimizer is None:  # nothing trainable (a frozen backbone under a head that learns by itself)
        fabric.setup(module)
    else:
        fabric.setup(module, optimizer)
    module.backward_loss = fabric.backward  # through Fabric's precision plugin
    try:
        _loop(module, loader, progress, callbacks or [])
    finally:
        module.backward_loss = torch.Tensor.backward


def fit_trainer(built: Built, progress: bool, callbacks: list | None = None) -> None:
    """Lightning's ``Trainer.fit`` trains the module through ``LightningCL`` (any number of processes)."""
    import lightning as L
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from clframe.run.trainer_adapter import LightningCL, StreamProgressBar

    tn = built.config["trainer"]
    trainer = L.Trainer(
        accelerator=tn["accelerator"], devices=tn["devices"], strategy=tn["strategy"], num_nodes=tn["num_nodes"],
        max_epochs=1, logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=progress, callbacks=list(callbacks or []) + ([StreamProgressBar()] if progress else []),
        num_sanity_val_steps=0, use_distributed_sampler=False,
    )
    adapter = LightningCL(built.module)
    try:
        trainer.fit(adapter, train_dataloaders=built.loader)
    except SIGTERMException:  # raised between two steps: the runner writes the checkpoint
        raise StoppedBetweenSteps from None
    finally:
        built.module.backward_loss = torch.Tensor.backward  # the module outlives the Trainer


def _loop(module: CLModule, loader: StreamIterator | CurriculumIterator, progress: bool, callbacks: list[Any]
          ) -> None:
    from tqdm.auto import tqdm

    module.train()
    module.on_fit_start()
    for cb in callbacks:
        cb.on_train_start(None, module)
    bar = tqdm(total=len(loader), desc="clframe", disable=not progress, mininterval=0.5)
    for i, batch in enumerate(loader):
        module.training_step(batch, i)
        for cb in callbacks:
            cb.on_train_batch_end(None, module, None, batch, i)
        if progress and (i + 1) % 10 == 0:
            bar.update(10)
            bar.set_postfix(progress_metrics(module), refresh=False)
    bar.close()
    module.on_train_epoch_end()
    for cb in callbacks:
        cb.on_train_end(None, module)
    module.on_train_end()
