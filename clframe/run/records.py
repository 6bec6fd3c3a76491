"""The run directory: config.yaml, metrics.csv, summary.json, and wandb when enabled.

Files are written atomically (temporary file, then rename), so a crash never leaves
a half-written file behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from clframe.core.hooks import Plugin
from clframe.errors import writing

METRIC_FIELDS = ["step", "experience", "eval_experience", "acc", "loss", "kind"]


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and a rename; a failed
    write raises ``StorageError`` naming the file and the cause, and leaves the old file whole."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class RunRecorder(Plugin):
    """Writes what a run produces into ``run_dir`` and, optionally, a Lightning ``WandbLogger``: a
    plugin of the run that records the evaluation rows (``on_boundary_eval``, ``on_records``) and
    logs the loss terms (``on_losses``) and what the monitors log (``log``).

    Args:
        run_dir: the run directory (created if missing).
        config: the resolved config (a plain dict), saved as ``config.yaml``.
        wandb_logger: a ``lightning.pytorch.loggers.WandbLogger`` or None (default None).
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], wandb_logger: Any = None) -> None:
        self.run_dir = Path(run_dir)
        self.wandb = wandb_logger
        self.rows: list[dict[str, Any]] = []
        atomic_write(self.run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log scalars to wandb, if enabled (``CLModule.log_metrics`` lands here)."""
        if self.wandb is not None:
            self.wandb.log_metrics(metrics, step=step)

    def on_records(self, module: Any, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        by_step: dict[int, dict[str, float]] = {}
        for r in rows:
            by_step.setdefault(r["step"], {})[f"cont_acc/exp{r['eval_experience']}"] = r["acc"]
        for step, accs in sorted(by_step.items()):
            self.log(accs, step)

    def on_boundary_eval(self, module: Any, experience: int, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        self.write_metrics()
        if rows:
            seen = [r["acc"] for r in rows[: experience + 1]]
            self.log({**{f"acc/exp{r['eval_experience']}": r["acc"] for r in rows},
                      "acc/avg_seen": sum(seen) / len(seen)}, module.cl_step)

    def on_losses(self, module: Any, values: dict[str, float]) -> None:
        self.log(values, module.cl_step)

    def state_dict(self) -> dict[str, Any]:
        """The rows recorded so far and the wandb run id (to continue the same wandb run)."""
        wandb_id = getattr(self.wandb, "version", None) if self.wandb is not None else None
        return {"rows": self.rows, "wandb_id": wandb_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])

    def write_metrics(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(self.rows, key=lambda r: (r["step"], r["kind"], r["eval_experience"])))
        atomic_write(self.run_dir / "metrics.csv", buf.getvalue())

    def write_summary(self, summary: dict[str, Any], figures: list[Path] | None = None) -> None:
        """Write ``summary.json`` (and the final metrics.csv); to wandb: scalars, a table of
        the final metrics and the ``figures`` (PNG paths)."""
        self.write_metrics()
        atomic_write(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        if self.wandb is not None:
            import wandb

            scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.wandb.experiment.summary.update(scalars)
            self.wandb.log_metrics({f"final/{k}": v for k, v in scalars.items()})
            self.wandb.experiment.log({
                "final_metrics": wandb.Table(columns=["metric", "value"], data=[[k, v] for k, v in scalars.items()]),
                **{f"plots/{Path(f).stem}": wandb.Image(str(f)) for f in figures or []},
            })
            self.wandb.finalize("success")
            # finalize() does not finish the wandb run; without this, the next run of a
            # sweep in the same process would log into this one
            self.wandb.experiment.finish()


def make_wandb_logger(run_dir: Path, config: dict[str, Any], run_id: str | None = None) -> Any:
    """A ``WandbLogger`` grouped by experiment and named by strategies and seed; offline
    unless the environment sets ``WANDB_MODE``. ``run_id`` continues that wandb run (a resume)."""
    from lightning.pytorch.loggers import WandbLogger

    log = config["logger"]
    name = f"{'+'.join(config['strategies']) or 'naive'}-s{config['seed']}"
    return WandbLogger(
        project=log["project"], entity=log["entity"], group=config["experiment_name"], name=name,
        save_dir=str(run_dir), config=config, mode=os.environ.get("WANDB_MODE", "offline"),
        **({"id": run_id, "resume": "allow"} if run_id else {}),
    )
