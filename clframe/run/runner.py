"""Run one config: validate it, resume it if asked, build it, train it, record it.

The driver of ``clframe run``: ``build`` (``clframe.run.build``) makes the module with its model,
strategies and monitors; the recorder and the checkpointer join as the run's own plugins; the
engine (``clframe.run.engines``) trains; ``clframe.run.results`` writes the summary and the figures.
"""

from __future__ import annotations

import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from clframe.checkpoint.checkpointer import Checkpointer, StopRequest
from clframe.checkpoint.resume import Resume, for_rank, resolve, restore
from clframe.config import validate
from clframe.config.trust import from_file
from clframe.core.hooks import Plugin
from clframe.errors import DivergenceError, RunInterrupted, StoppedBetweenSteps
from clframe.evaluation.evaluate import evaluation_seconds
from clframe.run.build import Built, build, processes, quiet
from clframe.run.distributed import is_main_rank
from clframe.run.engines import fit, fit_fabric, fit_loop
from clframe.run.records import RunRecorder
from clframe.run.results import fit_times, make_summary, run_curve, write_results
from clframe.run.startup import now, origin

__all__ = ["Built", "build", "fit", "fit_fabric", "fit_loop", "quiet", "run"]


class FirstStep(Plugin):
    """Notes when the run's first optimizer step is taken (``summary.json``'s ``startup_s`` ends there)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def after_optimizer_step(self, ctx: Any) -> None:
        if self.at is None:
            self.at = now()


def _resumed(c: dict[str, Any], overrides: list[str] | None) -> tuple[Resume | None, Any]:
    """The checkpoint ``c['resume']`` points to (None for a new run), and the context in which the
    run it holds may be built: its config may import only what this invocation or clframe names."""
    resume = resolve(c, overrides)
    if resume is None or c["resume_trust"]:
        return resume, nullcontext()
    return resume, from_file(f"checkpoint {resume.path}", resume.config, [c, overrides],
                             "give it on the command line ({key}={path}, with that component's other settings) or "
                             "add resume_trust=true")


def _train(built: Built, checkpointer: Checkpointer, stop: StopRequest, recorder: RunRecorder | None,
           resume: Resume | None, run_dir: Path) -> None:
    """Train over the stream; a divergence names the last good checkpoint, a signal stops with one."""
    try:
        with stop:
            fit(built)
    except DivergenceError as e:
        last = checkpointer.last_path or (resume.path if resume is not None else None)
        hint = f"The last good checkpoint is {last}." if last else "No checkpoint was written before it."
        raise DivergenceError(f"{e} {hint} Lower the learning rate or check the data; nothing was trained "
                              "past it.") from None
    except (RunInterrupted, StoppedBetweenSteps) as e:
        if recorder is not None:
            recorder.write_metrics()
        if isinstance(e, RunInterrupted):
            raise
        raise RunInterrupted(stop.signum or signal.SIGTERM, str(checkpointer.save(built.module)),
                             str(run_dir)) from None


def run(cfg: Any, run_dir: str | Path, overrides: list[str] | None = None,
        sweep_dir: str | Path | None = None, report: bool = False) -> dict[str, Any]:
    """Validate, build, train and record one run; return its summary.

    With ``resume`` set, the run continues from its last checkpoint in the resumed run's
    directory instead of ``run_dir``. SIGTERM/SIGINT stop it at the end of the step with a
    checkpoint (``RunInterrupted``); a NaN/inf loss or parameter stops it with
    ``DivergenceError`` naming the last good checkpoint.

    Args:
        cfg: a composed config (``DictConfig`` or plain dict).
        run_dir: where config.yaml, metrics.csv, summary.json and checkpoints/ go.
        overrides: the command-line overrides that composed ``cfg`` (default None: ``cfg`` is
            taken whole); with ``resume``, settings they do not touch come from the checkpoint.
        sweep_dir: the sweep directory of a ``clframe run -m`` job (default None: a single run); with
            ``logger.wandb``, it names the wandb group and holds the sweep's one ``wandb/`` folder.
        report: print the accuracy matrix and the final metrics (``clframe.run.report.format_run``) when
            training ends, before the wandb run closes, so its console log holds them (default False).
    """
    started, started_from = origin()
    quiet()
    start = time.perf_counter()
    c = validate(cfg)
    resume, trust = _resumed(c, overrides)
    if resume is not None:
        c, run_dir = resume.config, resume.run_dir  # the process layout too comes from the resumed run
        resume = for_rank(resume, *processes(c["trainer"]))
        if is_main_rank():
            print(f"Resuming {run_dir} from {resume.path.name} (step {resume.state['step']}).")
    with trust:
        built = build(c)
    c, module, run_dir = built.config, built.module, Path(run_dir)
    recorder = None
    if is_main_rank():
        recorder = RunRecorder(run_dir, c, _wandb_run(c, run_dir, sweep_dir, resume))
        module.log_sink = recorder.log
    try:
        return _run_built(built, run_dir, recorder, resume, (started, started_from, start), report)
    except BaseException:
        if recorder is not None:
            recorder.close(failed=True)  # so the next job of a sweep in this process gets its own wandb run
        raise


def _wandb_run(c: dict[str, Any], run_dir: Path, sweep_dir: str | Path | None, resume: Resume | None) -> Any:
    """The run's wandb run (``logger.wandb``), continuing the checkpoint's on a resume; else None."""
    if not c["logger"]["wandb"]:
        return None
    from clframe.run.wandb_log import WandbRun

    run_id = (resume.state["recorder"] or {}).get("wandb_id") if resume is not None else None
    return WandbRun(run_dir, c, None if sweep_dir is None else Path(sweep_dir), run_id)


def _run_built(built: Built, run_dir: Path, recorder: RunRecorder | None, resume: Resume | None,
               clock: tuple[float, str, float], report: bool) -> dict[str, Any]:
    """Train a built run and write its results (``run`` after the build); ``clock``: the start-up origin,
    its name and the moment ``run`` was called."""
    (started, started_from, start), c, module = clock, built.config, built.module
    ck, stop = c["checkpoint"], StopRequest()
    checkpointer = Checkpointer(run_dir, c, ck["every"], ck["at_experience_end"], ck["keep"], recorder, stop,
                                enabled=ck["enabled"])
    first_step = FirstStep()
    # the checkpointer last
    module.set_plugins([p for p in (first_step, recorder, checkpointer) if p is not None])
    if resume is not None:
        restore(module, built.loader, resume, recorder, checkpointer)
    fit_start, eval_start = time.perf_counter(), evaluation_seconds()
    if not module.finished:
        _train(built, checkpointer, stop, recorder, resume, run_dir)
    times = fit_times(time.perf_counter() - fit_start, evaluation_seconds() - eval_start, checkpointer)
    if recorder is None:  # the other ranks of a multi-process run: rank 0 reports
        return {}
    curve, source = run_curve(module)
    startup = None if first_step.at is None else first_step.at - started
    summary = make_summary(built, curve, source, times, time.perf_counter() - start, run_dir, checkpointer, resume,
                           startup={"startup_s": startup, "startup_from": started_from})
    if report:
        from clframe.run.report import format_run

        print("\n" + format_run(summary) + "\n", flush=True)
    write_results(built, curve, summary, run_dir, recorder)
    return summary
