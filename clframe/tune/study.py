"""One strategy's study and evaluation, each a ``clframe run -m`` in its own process: the trials through
Hydra's Optuna sweeper (its storage keeps every finished trial, so an interrupted study continues where
it stopped), the chosen configuration over seeds through the basic sweeper. The jobs run on whatever
launcher the extra overrides name (``hydra/launcher=submitit_local`` or ``submitit_slurm`` for parallel
trials with ``hydra.sweeper.n_jobs``)."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clframe.errors import ConfigError


@dataclass
class Study:
    """Where one strategy's trials go.

    Args:
        name: the Optuna study name (protocol, tuning experiment and strategy).
        storage: an Optuna storage URL (``sqlite:///<file>``, or a database server's URL).
        trials: how many finished trials the study should hold.
        sampler: ``tpe`` (seeded) or ``grid`` (every combination of ``choice`` dimensions).
        seed: the sampler's seed.
    """

    name: str
    storage: str
    trials: int
    sampler: str = "tpe"
    seed: int = 0


def finished_trials(study: Study) -> list[Any]:
    """The study's finished trials (an empty list before it exists)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        s = optuna.load_study(study_name=study.name, storage=study.storage)
    except KeyError:  # no such study yet
        return []
    return [t for t in s.trials if t.state == optuna.trial.TrialState.COMPLETE]


def best_trial(study: Study) -> tuple[dict[str, Any], float]:
    """The parameters and score of the study's best finished trial (a diverged trial scores -inf)."""
    trials = [t for t in finished_trials(study) if t.value is not None and math.isfinite(t.value)]
    if not trials:
        raise ConfigError(f"study '{study.name}' has no finished trial with a finite score: every trial diverged "
                          "or failed. Narrow the search space (e.g. lower learning rates).")
    best = max(trials, key=lambda t: t.value)
    return dict(best.params), float(best.value)


def clframe_run(args: list[str], log: Path) -> None:
    """``clframe run -m <args>`` in a new process, its output appended to ``log``; a failure is a
    ``ConfigError`` that points at the log's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", "from clframe.cli import main; main()", "run", "-m", *args]
    with open(log, "a") as f:
        f.write("$ clframe run -m " + " ".join(args) + "\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-8:])
        raise ConfigError(f"clframe run -m {' '.join(args)} failed (exit {rc}); its log: {log}\n{tail}")


def run_study(study: Study, strategy: str, space: dict[str, str], overrides: list[str], out: Path,
              metric: str, extra: list[str]) -> int:
    """Run the trials the study still lacks; returns how many ran now."""
    missing = study.trials - len(finished_trials(study))
    if missing <= 0:
        return 0
    attempt = len(list(out.glob("attempt-*")))
    dims = [f"{k}={v}" for k, v in space.items()]
    sampler = (["hydra/sweeper/sampler=grid"] if study.sampler == "grid"
               else [f"hydra.sweeper.sampler.seed={study.seed}"])
    clframe_run([*overrides, f"strategy={strategy}", "hydra/sweeper=optuna", *sampler, *dims,
                 f"hydra.sweeper.n_trials={missing}", "hydra.sweeper.direction=maximize",
                 f"hydra.sweeper.storage={study.storage}", f"hydra.sweeper.study_name={study.name}",
                 f"eval.metric={metric}", f"hydra.sweep.dir={out / f'attempt-{attempt}'}", "logger.progress=false",
                 *extra], out / "trials.log")
    return missing


def evaluate(strategy: str, params: dict[str, Any], experiment: str, seeds: int, out: Path, metric: str,
             extra: list[str]) -> list[float]:
    """Train ``strategy`` with ``params`` on ``experiment`` for seeds 0..seeds-1 (those not already done);
    returns each seed's ``metric``."""
    if len(scores(out, metric)) < seeds:
        chosen = [f"{k}={v}" for k, v in params.items()]
        # the Optuna sweeper's own settings (hydra.sweeper.n_jobs) are the study's; this sweep is a plain one
        extra = [o for o in extra if not o.lstrip("+~").startswith(("hydra.sweeper.", "hydra/sweeper"))]
        clframe_run([f"experiment={experiment}", f"strategy={strategy}", *chosen,
                     f"seed={','.join(map(str, range(seeds)))}", f"hydra.sweep.dir={out}", "logger.progress=false",
                     *extra], out.parent / f"{out.name}.log")
    found = scores(out, metric)
    if len(found) < seeds:
        raise ConfigError(f"the evaluation of '{strategy}' under {out} finished {len(found)} of {seeds} seeds.")
    return found[:seeds]


def scores(out: Path, metric: str) -> list[float]:
    """``metric`` of every finished run under ``out``, by seed."""
    found = {}
    for p in out.glob("*/summary.json"):
        s = json.loads(p.read_text())
        found[s.get("seed", p.parent.name)] = float(s[metric])
    return [found[k] for k in sorted(found, key=str)]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
