"""Batched evaluation on in-memory data: accuracy and loss per group of samples."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from clframe.core.objectives import CLASSIFICATION, Objective
from clframe.data.stream import TensorData


class _EvalClock:
    """Seconds this process spent inside ``evaluation_mode`` (outermost entries only), so a run can
    report its training time without its evaluations (``train_time_s`` against ``eval_time_s``)."""

    seconds = 0.0
    depth = 0


def evaluation_seconds() -> float:
    """Seconds spent inside ``evaluation_mode`` so far in this process; a run takes the difference
    over its training. Host time: on a GPU, work still queued when an evaluation ends counts later."""
    return _EvalClock.seconds


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no dropout, frozen BatchNorm statistics) and a restored RNG state, so
    evaluating leaves training exactly as it was; the previous mode comes back afterwards.
    The time spent inside counts as evaluation time (``evaluation_seconds``)."""
    was_training = model.training
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    model.eval()
    start = time.perf_counter()
    _EvalClock.depth += 1
    try:
        with torch.random.fork_rng(devices=cuda):
            yield model
    finally:
        model.train(was_training)
        _EvalClock.depth -= 1
        if _EvalClock.depth == 0:
            _EvalClock.seconds += time.perf_counter() - start


def segment_scores(
    model: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, t: Tensor, seg: Tensor, n: int,
    batch_size: int = 1000, objective: Objective = CLASSIFICATION,
) -> Tensor:
    """Score (accuracy, or minus the squared error) and mean loss of ``model(x, t)`` per segment, on
    the data's device.

    Args:
        model: maps inputs and task labels to logits.
        x, y, t: inputs, labels and task labels [N].
        seg: segment index of each sample in ``[0, n)`` [N] (e.g. its experience).
        n: number of segments.
        batch_size: samples per forward pass (default 1000).
        objective: loss and score (default classification).

    Returns:
        [2, n]: mean score and mean loss per segment (0 for an empty segment); no host sync.
    """
    correct = torch.zeros(n, device=y.device)
    loss = torch.zeros(n, device=y.device)
    with torch.inference_mode():
        for i in range(0, len(y), batch_size):
            s = slice(i, i + batch_size)
            out = model(x[s], t[s]).float()
            correct.index_add_(0, seg[s], objective.score(out, y[s]))
            loss.index_add_(0, seg[s], objective.loss(out, y[s], reduction="none"))
        counts = torch.bincount(seg, minlength=n).clamp_min(1).float()
        return torch.stack([correct / counts, loss / counts])


def concat_segments(datasets: list[TensorData]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``x, y, t`` of all datasets concatenated, and each sample's dataset index."""
    seg = torch.cat([torch.full((len(d),), i, device=d.y.device) for i, d in enumerate(datasets)])
    return (torch.cat([d.x for d in datasets]), torch.cat([d.y for d in datasets]),
            torch.cat([d.t for d in datasets]), seg)


def evaluate_many(
    model: Callable[[Tensor, Tensor], Tensor], datasets: list[TensorData], batch_size: int = 1000,
    objective: Objective = CLASSIFICATION,
) -> tuple[list[float], list[float]]:
    """Score (accuracy, or minus the squared error) and mean loss of ``model(x, t)`` on each dataset,
    with one host sync.

    Args:
        model: maps inputs and task labels to logits.
        datasets: the data to evaluate, e.g. every experience's eval split.
        batch_size: samples per forward pass (default 1000).
        objective: loss and score (default classification).
    """
    if not datasets:
        return [], []
    out = segment_scores(model, *concat_segments(datasets), len(datasets), batch_size, objective).cpu().tolist()
    return out[0], out[1]
