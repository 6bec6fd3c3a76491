"""The curriculum monitor: the feedback from learner to stream of a curriculum scenario, and its report.

A curriculum scenario (``Scenario.curriculum``) advances when its learner is ready. This monitor
passes every continual evaluation's scores to ``Curriculum.observe``, and records when each level
started and was solved (``summary.json["curriculum"]``, ``curriculum_comparison.png`` in
``clframe compare``). Its checkpoint state is the curriculum's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from clframe.config.registry import MONITORS
from clframe.core.monitor import Monitor, RunContext
from clframe.data.curriculum import Curriculum, check_curriculum_run

if TYPE_CHECKING:
    from clframe.compare import Comparison
    from clframe.core.module import CLModule


@MONITORS.register("curriculum")
class CurriculumMonitor(Monitor):
    """Drive and report a curriculum scenario (on whenever the scenario is a curriculum)."""

    enabled_by_default = True

    def __init__(self) -> None:
        self.curriculum: Curriculum | None = None

    def attach(self, run: RunContext) -> bool:
        self.curriculum = run.scenario.curriculum
        if self.curriculum is None:
            return False
        continual = run.config["monitors"].get("continual") or {}
        check_curriculum_run(run.world_size, bool(continual.get("enabled", True)), run.scenario.n_tasks,
                             run.module.head)
        return True

    def on_evaluation(self, module: CLModule, step: int, experience: int, scores: Tensor) -> None:
        self.curriculum.observe(step, experience, scores)

    def summary(self, module: CLModule) -> dict[str, Any]:
        return {"curriculum": self.curriculum.summary([e.info.get("N", e.index) for e in module.stream])}

    @classmethod
    def compare(cls, cmp: Comparison, out_dir: Path, **options: Any) -> list[Path]:
        from clframe.monitors.curriculum.compare import PNG, plot_curriculum_comparison

        path = plot_curriculum_comparison(cmp, out_dir / PNG)
        return [path] if path else []

    def state_dict(self) -> dict[str, Any]:
        return self.curriculum.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curriculum.load_state_dict(state)
