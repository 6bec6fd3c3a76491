"""A quiet progress bar: experience, step, latest evaluation accuracy and loss."""

from __future__ import annotations

from typing import Any


def progress_metrics(module: Any) -> dict[str, Any]:
    """Host-side values only, so refreshing the bar never syncs with the device."""
    out: dict[str, Any] = {"exp": f"{module.current_exp + 1}/{len(module.stream)}", "step": module.cl_step}
    if module.acc_matrix:
        row = module.acc_matrix[-1][: len(module.acc_matrix)]
        out["acc"] = f"{sum(row) / len(row):.3f}"
    if module.loss_log:
        out["loss"] = f"{module.loss_log[-1].get('loss/task', float('nan')):.3f}"
    return out
