"""What a model can do besides ``forward(x, t) -> logits``: optional capabilities, each a
``typing.Protocol``. ``CLModule``, the monitors and the strategies find them with ``isinstance`` on
the model or its submodules, never by probing attribute names, so a new head or hypernetwork
gains a behaviour by having the methods, and nothing in the core names it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class LearnsOnline(Protocol):
    """A head that learns by itself from each batch (e.g. the Kalman head): it scores the batch
    before its own update, and updates once the optimizer has stepped the rest of the model."""

    def online_step(self, h: Tensor, y: Tensor, t: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Logits [B, C], the loss the rest of the model trains on, and each sample's predictive
        log-likelihood [B], from features ``h`` and targets ``y``."""

    def observe(self) -> None:
        """Update from the batch ``online_step`` scored (after the optimizer step)."""


@runtime_checkable
class KnowsObjective(Protocol):
    """A component whose computation depends on the objective (classification or regression)."""

    def set_objective(self, name: str) -> None:
        """``name``: ``classification`` or ``regression``; called once, before training."""


@runtime_checkable
class MasksTaskClasses(Protocol):
    """A component that scores each sample among its task's classes only (a multi-head)."""

    def set_task_classes(self, task: int, classes: list[int]) -> None:
        """Task ``task`` has ``classes``; called once per task label, before training."""


@runtime_checkable
class TaskConditioned(Protocol):
    """A model with per-task parameters of which only the current task's train (a hypernetwork's
    task embeddings)."""

    def set_active_task(self, task: int) -> None:
        """From now on, task ``task`` is the one that trains."""


@runtime_checkable
class GeneratesWeights(Protocol):
    """A hypernetwork: it generates the target network's weights per task. What ``hnet_reg`` and the
    ``hypernet`` monitor use."""

    task_inference: str
    n_params: int
    core: nn.Module
    task_embs: nn.ParameterList

    def generate(self, tasks: Tensor, delta: dict[str, Tensor] | None = None, detach_emb: bool = False) -> Tensor:
        """Target weights of ``tasks`` [K]: [K, P]."""

    def theta(self) -> list[tuple[str, nn.Parameter]]:
        """The hypernetwork's own weights, named."""

    def infer_tasks(self, x: Tensor, t: Tensor) -> Tensor:
        """The inferred task of each sample [B]."""


@runtime_checkable
class Grows(Protocol):
    """A module that can add hidden units (e.g. the RNN hypernetwork's generator)."""

    hidden_size: int

    def grow(self, units: int) -> None:
        """Add ``units`` hidden units, keeping what it computes."""


@runtime_checkable
class ResizesToCheckpoint(Protocol):
    """A module whose shape can change during a run (e.g. a grown generator): before a checkpoint
    is loaded, it resizes itself to the checkpoint's weights."""

    def fit_to_state(self, state: dict[str, Any], prefix: str) -> None:
        """Resize to the tensors of ``state`` under ``prefix``."""


@runtime_checkable
class ReportsDiagnostics(Protocol):
    """A component that reports scalar diagnostics (a backbone's timescales, a head's learned drift)."""

    def diagnostics(self) -> dict[str, Any]:
        """Name -> value (floats or 0-d tensors)."""


@runtime_checkable
class HasTimescales(Protocol):
    """A recurrent backbone with per-unit timescales (``tau_rnn``)."""

    def timescales(self) -> list[Tensor]:
        """One tensor of timescales per layer."""


@runtime_checkable
class Silenceable(Protocol):
    """A recurrent backbone whose units can be silenced (``clframe ablate``); without ``timescales`` it
    also has ``num_layers`` layers of ``out_features`` units."""

    def silence(self, layer: int, units: Tensor) -> None:
        """Silence ``units`` of ``layer`` in place."""
