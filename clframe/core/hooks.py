"""The events of a run, the one interface strategies, monitors and the run's own recorder and
checkpointer share. ``CLModule.emit`` calls each event on every plugin that overrides it, in
order: the strategies (as configured), then the monitors, then the run's plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from clframe.core.module import CLModule
    from clframe.core.strategy import StepContext
    from clframe.data.stream import Experience

# events dispatched through ``CLModule.emit`` (``setup`` runs in stages: strategies before the
# untrained model is evaluated, the other plugins after)
EVENTS = ("on_experience_start", "before_optimizer_step", "after_optimizer_step", "on_step_end",
          "on_experience_end", "on_boundary_eval", "on_evaluation", "on_records", "on_losses", "on_log_flush",
          "on_train_end")


class Plugin:
    """Base of everything that takes part in a run. Every event is a no-op; override what you need.

    State lives on ``self`` and is saved through ``state_dict`` (tensors and plain containers only,
    so checkpoints load with ``torch.load(weights_only=True)``).
    """

    def setup(self, module: CLModule) -> None:
        """Once, before training (parameters on their device, the optimizer built)."""

    def on_experience_start(self, exp: Experience, module: CLModule) -> None:
        """Before the first batch of ``exp``. Not called on boundary-free streams."""

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Gradients are ready (unscaled); e.g. project or mask them."""

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """After the optimizer step; e.g. add to a buffer, update EMA weights."""

    def on_step_end(self, ctx: StepContext) -> None:
        """The step is complete (its loss terms recorded); e.g. evaluate, measure, checkpoint."""

    def on_experience_end(self, exp: Experience, module: CLModule) -> None:
        """After the last batch of ``exp``, before its evaluation; e.g. compute importances. Not
        called on boundary-free streams."""

    def on_boundary_eval(self, module: CLModule, experience: int, rows: list[dict[str, Any]]) -> None:
        """Every experience was evaluated after ``experience`` ended (on every stream): ``rows`` are
        the accuracy-matrix row as metrics.csv rows (empty on ranks other than 0)."""

    def on_evaluation(self, module: CLModule, step: int, experience: int, scores: Tensor) -> None:
        """A continual evaluation at ``step`` while ``experience`` trains: ``scores`` [T] is the
        score on each experience (a device tensor, NaN where not evaluated)."""

    def on_records(self, module: CLModule, rows: list[dict[str, Any]]) -> None:
        """Evaluation rows reached the host (metrics.csv rows, ``kind`` ``continual``)."""

    def on_losses(self, module: CLModule, values: dict[str, float]) -> None:
        """The pending loss terms were read (one host sync, every ``logger.log_every`` steps):
        their means by ``loss/<name>``."""

    def on_log_flush(self, module: CLModule) -> None:
        """The run is about to send its logged points to the logger (wandb), in step order: move what is
        queued on the device to the host now and log it (``module.log_metrics``, ``on_records``). Only
        with a logger on, every ``logger.log_every`` steps; a monitor that queues records overrides it."""

    def on_train_end(self, module: CLModule) -> None:
        """After the last experience's evaluation."""

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain containers that restore this plugin's state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


def overrides(plugin: object, hook: str) -> bool:
    """True if ``plugin``'s class overrides ``hook`` of the base that declares it (``Plugin``, or
    ``Strategy`` for its own hooks), so the module can skip the no-op calls."""
    mro = type(plugin).__mro__
    declared = next((c for c in reversed(mro) if hook in c.__dict__), None)
    return declared is not None and getattr(type(plugin), hook) is not declared.__dict__[hook]
