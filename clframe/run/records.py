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
    """Writes what a run produces into ``run_dir`` and, optionally, a wandb run: a plugin of the run
    that records the evaluation rows (``on_boundary_eval``, ``on_records``) and logs the loss terms
    (``on_losses``) and what the monitors log (``log``).

    wandb receives its points in step order: every ``logger.log_every`` steps (``on_losses``) the
    monitors first move what they queued on the device to the host (``on_log_flush``, one host sync,
    only with wandb on), then everything queued since the last release is sent, sorted by step.

    Args:
        run_dir: the run directory (created if missing).
        config: the resolved config (a plain dict), saved as ``config.yaml``.
        wandb_run: a ``clframe.run.wandb_log.WandbRun`` or None (default None).
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], wandb_run: Any = None) -> None:
        self.run_dir = Path(run_dir)
        self.wandb = wandb_run
        self.rows: list[dict[str, Any]] = []
        atomic_write(self.run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Queue scalars at ``step`` for wandb, if enabled (``CLModule.log_metrics`` lands here)."""
        if self.wandb is not None:
            self.wandb.log(metrics, step)

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
        if self.wandb is not None:
            self.wandb.release()  # the monitors flushed at the boundary (they run before the recorder)

    def on_losses(self, module: Any, values: dict[str, float]) -> None:
        if self.wandb is None:
            return
        module.emit("on_log_flush", module)  # the monitors' queued points first, so none comes late
        self.log(values, module.cl_step)
        self.wandb.release()

    def on_train_end(self, module: Any) -> None:
        if self.wandb is not None:
            self.wandb.release()

    def state_dict(self) -> dict[str, Any]:
        """The rows recorded so far and the wandb run id (to continue the same wandb run). Taken for a
        checkpoint, after the monitors flushed: wandb gets what is queued now, so a crash loses none of it."""
        if self.wandb is not None:
            self.wandb.release()
        return {"rows": self.rows, "wandb_id": None if self.wandb is None else self.wandb.id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])

    def write_metrics(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(sorted(self.rows, key=lambda r: (r["step"], r["kind"], r["eval_experience"])))
        atomic_write(self.run_dir / "metrics.csv", buf.getvalue())

    def write_summary(self, summary: dict[str, Any], figures: list[Path] | None = None) -> None:
        """Write ``summary.json`` (and the final metrics.csv); to wandb: the scalars, the accuracy matrix
        and final metrics as tables, and the ``figures`` (PNG paths); then finish the wandb run."""
        self.write_metrics()
        atomic_write(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        if self.wandb is not None:
            self.wandb.finish_run(summary, summary.get("acc_matrix") or [], list(figures or []))

    def close(self, failed: bool) -> None:
        """Finish the wandb run if it is still open (a failed or interrupted run: exit code 1)."""
        if self.wandb is not None:
            self.wandb.finish(1 if failed else 0)
