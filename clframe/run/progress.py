"""A quiet progress bar: experience, step, latest evaluation accuracy and loss."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar


def progress_metrics(module: Any) -> dict[str, Any]:
    """Host-side values only, so refreshing the bar never syncs with the device."""
    out: dict[str, Any] = {"exp": f"{module.current_exp + 1}/{len(module.stream)}", "step": module.cl_step}
    if module.acc_matrix:
        row = module.acc_matrix[-1][: len(module.acc_matrix)]
        out["acc"] = f"{sum(row) / len(row):.3f}"
    if module.loss_log:
        out["loss"] = f"{module.loss_log[-1].get('loss/task', float('nan')):.3f}"
    return out


class StreamProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar showing stream progress instead of epochs."""

    def __init__(self, refresh_rate: int = 10) -> None:
        super().__init__(refresh_rate=refresh_rate)

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        return progress_metrics(pl_module.cl)  # the Trainer trains the adapter, LightningCL

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description("clframe")
