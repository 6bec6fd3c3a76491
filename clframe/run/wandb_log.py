"""One wandb run per clframe run, laid out for comparing strategies.

Every run carries flat, groupable config fields (``strategy``, ``scenario``, ``backbone``, ``head``,
``seed``, ``sweep_id``, ``experiment``, ``clframe_version``, ``git_commit``) beside the whole resolved
config under ``config``; ``job_type`` is the strategy and the group is the experiment (plus the sweep),
so wandb's "group by strategy" gives mean ± std over seeds. Every chart's x-axis is the training step
``trainer/step`` (``define_metric``). Points are released in step order: what monitors queue on the
device is flushed first (the ``on_log_flush`` event), so no history row is back-dated. The runs of a
sweep share one ``wandb/`` folder in the sweep directory: ``wandb sync <sweep_dir>/wandb`` uploads it.
"""

from __future__ import annotations

import functools
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

STEP = "trainer/step"  # the x-axis of every chart: optimizer steps of the run


def strategy_label(config: dict[str, Any]) -> str:
    """The run's strategies joined by '+' (``replay+ewc``); ``naive`` when there is none."""
    return "+".join(config.get("strategies") or {}) or "naive"


@functools.cache
def git_commit() -> str | None:
    """The commit of the clframe source tree in use (with ``-dirty`` when it has uncommitted changes),
    or None when clframe is not run from a git checkout (a wheel)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def run_fields(config: dict[str, Any], sweep_id: str | None) -> dict[str, Any]:
    """The flat fields a comparison groups and filters by."""
    import clframe

    def name(key: str) -> str | None:
        node = config.get(key)
        return node.get("name") if isinstance(node, dict) else None

    return {"strategy": strategy_label(config), "scenario": name("scenario"), "backbone": name("backbone"),
            "head": name("head"), "hypernet": name("hypernet"), "seed": config["seed"],
            "experiment": config["experiment_name"], "sweep_id": sweep_id, "clframe_version": clframe.__version__,
            "git_commit": git_commit()}


def run_group(config: dict[str, Any], sweep_id: str | None) -> str:
    """``logger.group`` if set; otherwise the experiment name, and ``/<sweep_id>`` in a sweep."""
    group = config["logger"]["group"]
    if group:
        return str(group)
    return config["experiment_name"] + (f"/{sweep_id}" if sweep_id else "")


class WandbRun:
    """The wandb run of one clframe run; offline unless the environment sets ``WANDB_MODE``.

    Args:
        run_dir: the run directory.
        config: the resolved config (a plain dict).
        sweep_dir: the sweep directory of a ``-m`` job (its name is the ``sweep_id``, and its
            ``wandb/`` folder holds every job's wandb run) (default None: a single run).
        run_id: continue this wandb run (a resume) (default None: a new run).
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], sweep_dir: Path | None = None,
                 run_id: str | None = None) -> None:
        import wandb

        log = config["logger"]
        sweep_id = Path(sweep_dir).name if sweep_dir is not None else None
        fields = run_fields(config, sweep_id)
        where = Path(sweep_dir if sweep_dir is not None else run_dir)
        where.mkdir(parents=True, exist_ok=True)
        tags = [config["experiment_name"], *(config.get("strategies") or {"naive": None}), fields["scenario"],
                fields["backbone"], *log["tags"]]
        self.run = wandb.init(
            project=log["project"], entity=log["entity"], group=run_group(config, sweep_id),
            job_type=log["job_type"] or fields["strategy"], name=f"{fields['strategy']}-s{config['seed']}",
            tags=list(dict.fromkeys(str(t)[:64] for t in tags if t)), dir=str(where),
            config={**fields, "config": config}, mode=os.environ.get("WANDB_MODE", "offline"),
            settings=wandb.Settings(console=log["console"], silent=True),
            **({"id": run_id, "resume": "allow"} if run_id else {}),
        )
        self.run.define_metric(STEP)
        self.run.define_metric("*", step_metric=STEP)
        self._queue: list[tuple[int, dict[str, Any]]] = []
        self._released = -1  # the last step released to wandb
        self._late: set[str] = set()
        self._finished = False

    @property
    def id(self) -> str:
        return self.run.id

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Queue ``metrics`` at ``step``; ``release`` sends them in step order."""
        self._queue.append((int(step), dict(metrics)))

    def release(self) -> None:
        """Send the queued points to wandb sorted by step (the points of one step in one history row)."""
        rows: list[tuple[int, dict[str, Any]]] = []
        for step, metrics in sorted(self._queue, key=lambda r: r[0]):  # stable: a step's points keep their order
            if rows and rows[-1][0] == step and not rows[-1][1].keys() & metrics.keys():
                rows[-1][1].update(metrics)
            else:
                rows.append((step, metrics))
        self._queue = []
        for step, metrics in rows:
            if step < self._released:
                self._warn_late(metrics, step)
            self._released = max(self._released, step)
            self.run.log({**metrics, STEP: step})

    def _warn_late(self, metrics: dict[str, Any], step: int) -> None:
        new = set(metrics) - self._late
        if new:
            self._late |= new
            warnings.warn(f"wandb: {', '.join(sorted(new))} at step {step} reached the logger after step "
                          f"{self._released} was logged; a monitor that queues records on the device should flush "
                          "them in on_log_flush.", stacklevel=2)

    def finish_run(self, summary: dict[str, Any], acc_matrix: list[list[float]], figures: list[Path]) -> None:
        """The final scalars into the run summary, the accuracy matrix as a table, the figures, then finish."""
        import wandb

        self.release()
        scalars = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        self.run.summary.update(scalars)
        n = max((len(r) for r in acc_matrix), default=0)
        matrix = wandb.Table(columns=["trained_through", *(f"exp{j}" for j in range(n))],
                             data=[[i, *row] for i, row in enumerate(acc_matrix)])
        final = wandb.Table(columns=["metric", "value"], data=[[k, v] for k, v in scalars.items()])
        self.run.log({"acc_matrix": matrix, "final_metrics": final,
                      **{f"plots/{Path(f).stem}": wandb.Image(str(f)) for f in figures}, STEP: max(self._released, 0)})
        self.finish(0)

    def finish(self, exit_code: int = 1) -> None:
        """Finish the wandb run (a failed run with ``exit_code`` 1), so the next run of a sweep in this
        process gets its own. A second call does nothing."""
        if self._finished:
            return
        self._finished = True
        self.release()
        self.run.finish(exit_code=exit_code)
