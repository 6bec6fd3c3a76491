"""The Monitor base class: a plugin that observes a run without changing its training.

A monitor is one file in ``clframe/monitors/`` (or a user's module), registered with
``@MONITORS.register("<name>")`` and configured under ``monitors.<name>``: its constructor
signature is the schema, and ``monitors.<name>.enabled`` switches it on or off. It owns:

- its config keys (the signature);
- its hooks into the run (the events of ``clframe.core.hooks.Plugin``);
- its entries in ``summary.json`` (``summary``);
- its files and figures in the run directory (``write``);
- its figure in ``clframe compare`` (``compare``, a class method: it reads run directories);
- its checkpoint state (``state_dict``/``load_state_dict``).

The runner, the checkpoints and ``clframe compare`` loop over the monitors and know none by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from clframe.core.hooks import Plugin

if TYPE_CHECKING:
    from clframe.compare import Comparison
    from clframe.core.module import CLModule
    from clframe.data.stream import Scenario
    from clframe.evaluation.curve import Curve


@dataclass
class RunContext:
    """What a monitor may look at when it is attached to a run.

    Args:
        config: the resolved run config (a plain dict).
        scenario: the built scenario.
        module: the ``CLModule`` (its model, strategies and stream).
        world_size: number of processes.
    """

    config: dict[str, Any]
    scenario: Scenario
    module: CLModule
    world_size: int


@dataclass
class CompareOption:
    """A command-line option of ``clframe compare`` that a monitor's figure takes
    (``--<monitor>-<name>``).

    Args:
        help: the option's help text.
        choices: the allowed values.
        default: the value without the option.
    """

    help: str
    choices: tuple[str, ...]
    default: str


class Monitor(Plugin):
    """Base class for monitors. Override the events you observe (``setup``, ``on_step_end``,
    ``on_boundary_eval``, ...) and what the monitor reports.

    ``enabled_by_default`` says whether the monitor is on unless the config turns it off; a monitor
    that is on but does not apply to a run (``attach`` returns False) stays out of it.
    """

    enabled_by_default: ClassVar[bool] = False
    compare_options: ClassVar[dict[str, CompareOption]] = {}

    def attach(self, run: RunContext) -> bool:
        """Whether this monitor takes part in ``run`` (default True); it may keep what it needs of
        ``run`` and refuse settings it cannot work with by raising ``ConfigError``."""
        return True

    def summary(self, module: CLModule) -> dict[str, Any]:
        """Entries for ``summary.json`` at the end of the run (default none)."""
        return {}

    def write(self, run_dir: Path, module: CLModule, title: str) -> list[Path]:
        """Write this monitor's files into ``run_dir`` (CSV files, figures under ``plots/``); return
        the figures, which also go to wandb (default none)."""
        return []

    @classmethod
    def compare(cls, cmp: Comparison, out_dir: Path, **options: Any) -> list[Path]:
        """Draw this monitor's figure of a ``clframe compare`` from the runs' directories into
        ``out_dir``; return the files written (default none). ``options``: the values of
        ``compare_options``."""
        return []


@runtime_checkable
class ProvidesCurve(Protocol):
    """A monitor that records an accuracy curve over training steps (the continual evaluator): the
    run's curve metrics and ``plots/accuracy_curves.png`` come from the first one enabled."""

    def curve(self, module: CLModule) -> Curve:
        """The recorded curve."""
