"""Batched evaluation of a model on in-memory experience data."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from clframe.stream import TensorData


def evaluate_many(
    model: Callable[[Tensor, Tensor], Tensor], datasets: list[TensorData], batch_size: int = 1000
) -> tuple[list[float], list[float]]:
    """Accuracy and mean cross-entropy of ``model(x, t)`` on each dataset.

    Runs under ``inference_mode`` in large batches and syncs with the host once.

    Args:
        model: maps inputs and task labels to logits.
        datasets: the data to evaluate, e.g. every experience's eval split.
        batch_size: samples per forward pass (default 1000).
    """
    correct, losses = [], []
    with torch.inference_mode():
        for d in datasets:
            c = torch.zeros((), device=d.y.device)
            s = torch.zeros((), device=d.y.device)
            for i in range(0, len(d), batch_size):
                logits = model(d.x[i : i + batch_size], d.t[i : i + batch_size])
                y = d.y[i : i + batch_size]
                c += (logits.argmax(-1) == y).sum()
                s += F.cross_entropy(logits.float(), y, reduction="sum")
            n = max(len(d), 1)
            correct.append(c / n)
            losses.append(s / n)
    if not datasets:
        return [], []
    out = torch.stack([torch.stack(correct), torch.stack(losses)]).cpu().tolist()
    return out[0], out[1]
