"""Accuracy against shots: how well a sequence model classifies a class's k-th example in context
(the ``fewshot`` monitor of in-context scenarios)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from clframe.config.registry import MONITORS
from clframe.core.monitor import Monitor, RunContext
from clframe.core.objectives import IGNORE
from clframe.data.stream import TensorData
from clframe.evaluation.evaluate import evaluation_mode


def shot_index(y: Tensor) -> Tensor:
    """For every step, how many earlier steps of its sequence had the same label (0 for a class's
    first shot): what "accuracy against shots" is grouped by.

    ``y`` may be the labels as the scenarios store them, with the first shot of every class
    hidden as ``IGNORE`` (``first_shot_ignored``): such a step is a first shot and gets 0, and
    since every class's first shot is hidden then, the labelled steps of a sequence that has
    ``IGNORE`` steps count one more (the hidden first shot of their label).

    Args:
        y: labels [N, T] (int64, >= 0 or ``IGNORE``).

    Returns:
        [N, T] int64.
    """
    ignored = y == IGNORE
    seen = torch.zeros_like(y)
    for label in range(int(y.max()) + 1 if y.numel() else 0):  # a few labels, one cumulative count over [N, T] each
        is_label = y == label
        seen += (is_label.cumsum(1) - 1) * is_label  # earlier steps with this label
    hidden_first = ignored.any(1, keepdim=True) & ~ignored
    return (seen + hidden_first).masked_fill(ignored, 0)


@torch.no_grad()
def accuracy_by_shot(model: Any, data: TensorData, batch_size: int = 1000) -> list[float | None]:
    """Accuracy of ``model(x, t)`` (logits [N, T, C]) at every shot index over the scored steps of
    ``data`` (labels [N, T]); entry s is for a class's (s + 1)-th example in its sequence, None
    where no step has that index.

    Args:
        model: called as ``model(x, t)``.
        data: sequences with per-step labels.
        batch_size: sequences per forward pass (default 1000).
    """
    hits: Tensor | None = None
    counts: Tensor | None = None
    for i in range(0, len(data), batch_size):
        x, y, t = (z[i: i + batch_size] for z in (data.x, data.y, data.t))
        pred = model(x, t).argmax(-1).to(y.device)  # [N, T]
        shots, scored = shot_index(y), y != IGNORE
        n = int(shots.max()) + 1
        h = torch.zeros(n, device=y.device).index_add_(0, shots[scored], (pred == y)[scored].float())
        c = torch.zeros(n, device=y.device).index_add_(0, shots[scored], torch.ones_like(h[:1]).expand(
            int(scored.sum())))
        hits = h if hits is None else _add(hits, h)
        counts = c if counts is None else _add(counts, c)
    if counts is None:
        return []
    return [float(a / b) if b > 0 else None for a, b in zip(hits.tolist(), counts.tolist())]


def _add(a: Tensor, b: Tensor) -> Tensor:
    n = max(len(a), len(b))
    return torch.nn.functional.pad(a, (0, n - len(a))) + torch.nn.functional.pad(b, (0, n - len(b)))


def fewshot_summary(module: Any, stream: Any, batch_size: int = 1000) -> dict[str, Any]:
    """``accuracy_by_shot``: per experience's eval episodes and, when the scenario keeps held-out
    classes (``info["heldout_eval"]``), for those (``heldout``), with the final model; and
    ``heldout_acc``: the held-out episodes' accuracy over all scored steps."""
    out: dict[str, Any] = {}
    device = next(module.parameters()).device
    with evaluation_mode(module.eval_target()) as model:
        for e in stream:
            out[str(e.index)] = accuracy_by_shot(model, e.eval, batch_size)
        held = stream[0].info.get("heldout_eval")
        if held is not None:
            held = held.to(device)
            out["heldout"] = accuracy_by_shot(model, held, batch_size)
            scored = held.y != IGNORE
            pred = torch.cat([model(held.x[i: i + batch_size], held.t[i: i + batch_size]).argmax(-1)
                              for i in range(0, len(held), batch_size)])
            acc = float((pred == held.y)[scored].float().mean()) if bool(scored.any()) else None
            return {"accuracy_by_shot": out, "heldout_acc": acc}
    return {"accuracy_by_shot": out}


@MONITORS.register("fewshot")
class FewShot(Monitor):
    """For in-context scenarios (``info["in_context"]``), ``summary.json`` gets the final model's
    accuracy against shots per experience and on the held-out classes (``fewshot_summary``)."""

    enabled_by_default = True

    def attach(self, run: RunContext) -> bool:
        return bool(run.scenario.stream[0].info.get("in_context"))

    def summary(self, module: Any) -> dict[str, Any]:
        return fewshot_summary(module, module.stream, module.eval_batch_size)
