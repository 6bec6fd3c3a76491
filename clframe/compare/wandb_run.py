"""``clframe compare --wandb``: the comparison as one summary run in the runs' wandb project.

The run (job type ``compare``) holds the comparison table (one row per group: its label, the number
of seeds, mean and std of every metric) as a ``wandb.Table`` and the comparison figures, in the group
the compared runs share (the experiment, plus the sweep for the jobs of one sweep), so it sits beside
them in wandb. Its offline files go into ``<out>/wandb``: the sweep's own wandb folder when ``out`` is
the sweep directory, so one ``wandb sync <sweep_dir>/wandb`` uploads the jobs and their comparison.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clframe.compare.runs import Comparison, Run
from clframe.compare.table import stat


def sweep_id(run_dir: Path) -> str | None:
    """The id of the sweep a run directory belongs to (its parent, where Hydra wrote ``multirun.yaml``)."""
    parent = Path(run_dir).resolve().parent
    return parent.name if (parent / "multirun.yaml").exists() else None


def _shared(runs: Sequence[Run], value: Any) -> Any:
    """``value(run)`` if every run gives the same, else None."""
    values = {repr(value(r)) for r in runs}
    return value(runs[0]) if len(values) == 1 else None


def log_comparison(cmp: Comparison, metrics: Sequence[str], figures: Sequence[Path], out_dir: Path) -> str:
    """Log the comparison as one wandb run (offline unless ``WANDB_MODE`` says otherwise); return its id.

    Args:
        cmp: the grouped runs.
        metrics: the summary keys of the table.
        figures: PNG files to attach (comparison.png and the monitors' figures).
        out_dir: where the run's ``wandb/`` folder goes.
    """
    import wandb

    from clframe.run.wandb_log import run_group

    def logger(key: str, default: Any = None) -> Any:
        return lambda r: (r.config.get("logger") or {}).get(key, default)

    project = _shared(cmp.runs, logger("project", "clframe")) or "clframe"
    entity = _shared(cmp.runs, logger("entity"))
    group = _shared(cmp.runs, lambda r: run_group({"experiment_name": "default", **r.config,
                                                   "logger": {"group": logger("group")(r)}}, sweep_id(r.dir)))
    columns = ["group", "n_seeds", *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))]
    rows = []
    for g in cmp.groups:
        cells: list[Any] = []
        for m in metrics:
            s = stat(g, m)
            cells += [s.mean, s.std]
        rows.append([g.label, len(g.runs), *cells])
    out_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, entity=entity, group=group or "compare", job_type="compare",
                     name=f"compare-{group or 'runs'}", tags=["compare", *cmp.experiments], dir=str(out_dir),
                     mode=os.environ.get("WANDB_MODE", "offline"), settings=wandb.Settings(silent=True),
                     config={"group_by": cmp.keys, "metrics": list(metrics), "runs": [str(r.dir) for r in cmp.runs],
                             "n_runs": len(cmp.runs), "comparable": cmp.comparable})
    try:
        run.log({"comparison": wandb.Table(columns=columns, data=rows),
                 **{f"plots/{Path(f).stem}": wandb.Image(str(f)) for f in figures}})
        run.summary.update({"n_groups": len(cmp.groups), "n_runs": len(cmp.runs)})
    finally:
        run.finish()
    return run.id
