"""``clframe run``: check every job's config, claim the run (or sweep) directory, resume if asked, and
hand over to Hydra, whose job function trains (``clframe.run.runner.run``)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

from clframe.cli.common import USER_ERRORS, fail
from clframe.cli.compare import compare_dirs
from clframe.errors import ConfigError, DivergenceError, RunInterrupted, StorageError

# the script Lightning's DDP launcher re-runs for the other ranks (a path, not an import: launch imports the CLI)
LAUNCH = Path(__file__).with_name("launch.py")
_SWEEP_DIRS: list[str] = []


def _sweep_combinations(overrides: list[str]) -> list[list[str]]:
    """Expand Hydra sweep overrides (``a=1,2``) into the plain override lists of every job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override() and o.get_key_element().lstrip("+~").startswith("hydra."):
            continue  # not the jobs' settings: a sweeper's search space (hydra.sweeper.params.x=interval(0, 1))
        if o.is_interval_sweep():  # a search dimension of an optimising sweeper: checked at its lower end
            choices.append([f"{o.get_key_element()}={o.value().start}"])
        elif o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(c) for c in itertools.product(*choices)]


def _per_strategy(overrides: list[str], args: list[str]) -> tuple[list[str], list[str], list[str]]:
    """A strategy sweep's settings of one strategy (``strategies.replay.mem_size=500`` with
    ``strategy=naive,replay``) in the form Hydra applies to the jobs that choose it only
    (``clframe.config.strategy_settings``): the overrides, ``args``, and a line per setting saying
    which jobs it applies to."""
    from clframe.config.strategy_settings import describe, per_strategy

    found = per_strategy(overrides)
    if not found:
        return overrides, args, []
    jobs = _sweep_combinations(overrides)
    new = {p.line: p.rewritten for p in found}
    return [new.get(o, o) for o in overrides], [new.get(a, a) for a in args], [describe(p, jobs) for p in found]


def _precheck(overrides: list[str], multirun: bool) -> list[dict[str, Any]]:
    """Validate every job's config before any of them trains; return them."""
    from clframe.config import compose, validate

    jobs = _sweep_combinations(overrides) if multirun else [overrides]
    return [validate(compose(job)) for job in jobs]


def _claim_dir(overrides: list[str], multirun: bool, identity: Any, create: bool = True) -> tuple[str, bool] | None:
    """The run directory (the sweep directory with ``multirun``) this invocation writes to, created
    now, before Hydra runs anything, as an absolute path; and whether this call created it.

    The shipped default name gets a short hash of ``identity`` (the resolved config, or the
    sweep's overrides) and the next free suffix if it is taken (``clframe.run.rundir.claim``); a
    directory the user set is used as given unless it holds another run. Passed back as a
    ``hydra.run.dir``/``hydra.sweep.dir`` override, it also fixes where every job of a sweep
    writes, whichever process runs it. None where Hydra must resolve it (``${hydra:...}``).
    ``create=False`` (a process of rank > 0 started by a launcher) only names it: rank 0 created it;
    processes started apart (``srun``) agree on a generated name within the same second, so such
    runs should name their directory (``hydra.run.dir``)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from clframe.config import CONFIG_DIR
    from clframe.run.rundir import DEFAULT_RUN_DIR, DEFAULT_SWEEP_DIR, claim, short_hash

    node = "sweep" if multirun else "run"
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=_sweep_combinations(overrides)[0], return_hydra_config=True)
    except HydraException as e:
        raise ConfigError(str(e)) from e
    raw = OmegaConf.to_container(cfg.hydra[node], resolve=False)["dir"]
    try:
        wanted = str(cfg.hydra[node].dir)
    except Exception:  # e.g. a ${hydra:...} interpolation, only resolvable inside a job: leave it to Hydra
        return None
    # passed single-quoted, so spaces, commas (a sweep otherwise) and '=' stay literal; these would not
    if any(c in wanted for c in ("'", "\\", "${")):
        return None
    default = raw == (DEFAULT_SWEEP_DIR if multirun else DEFAULT_RUN_DIR)
    path = Path(f"{wanted}-{short_hash(identity)}" if default else wanted).absolute()
    if not create:  # a process of rank > 0: the name rank 0 claimed (a generated one, if in the same second)
        return str(path), False
    path, created = claim(path, unique=default)
    return str(path), created


def _with_overrides(args: list[str], extra: dict[str, str]) -> list[str]:
    """``args`` with ``key=value`` for each of ``extra`` in place of any given one, placed right after the
    other overrides (Hydra's argument parser takes them as one block, e.g. before a trailing ``--cfg job``)."""
    from hydra._internal.utils import get_args_parser

    args = [a for a in args if a.lstrip("+").split("=", 1)[0] not in extra]
    given = get_args_parser().parse_args(args).overrides
    end = next(i + len(given) for i in range(len(args) - len(given) + 1) if args[i:i + len(given)] == given)
    return [*args[:end], *(f"{k}={v}" for k, v in extra.items()), *args[end:]]


def _given(overrides: list[str], key: str) -> str | None:
    """The value ``overrides`` give ``key`` (None if they do not)."""
    return next((o.split("=", 1)[1] for o in overrides if o.lstrip("+").split("=", 1)[0] == key), None)


def _resume_dir(overrides: list[str]) -> str | None:
    """The run directory a single run with ``resume=`` continues in, checked now (before Hydra creates
    any directory): the checkpoint must exist and load. None for a new run."""
    from clframe.checkpoint.files import latest_checkpoint
    from clframe.checkpoint.resume import find_latest_run
    from clframe.config import compose, validate

    value = _given(overrides, "resume")
    if value in (None, "", "null", "None"):
        return None
    if value == "auto":
        found = find_latest_run(validate(compose(overrides)))
        return None if found is None else str(found.absolute())
    path, _ = latest_checkpoint(value)
    return str(path.parent.parent.absolute())


def cmd_run(args: list[str]) -> None:
    from hydra._internal.utils import get_args_parser  # the parser hydra.main applies to sys.argv

    from clframe.run.rundir import launched_child, remove_if_unused

    ns = get_args_parser().parse_args(args)
    multirun, overrides = ns.multirun, ns.overrides
    _SWEEP_DIRS.clear()
    claimed = None
    try:
        overrides, args, notes = _per_strategy(overrides, args) if multirun else (overrides, args, [])
        configs = _precheck(overrides, multirun)
        for note in notes:  # which jobs a strategy's own setting reaches, before any job runs
            print(note)
        resume_dir = None if multirun else _resume_dir(overrides)
        if resume_dir is None:  # a process of rank > 0 writes where rank 0 claimed, creating nothing
            identity = overrides if multirun else configs[0]
            claimed = _claim_dir(overrides, multirun, identity, create=not launched_child())
    except (*USER_ERRORS, StorageError) as e:
        fail(e)
    if claimed is not None:
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        args = _with_overrides(args, {key: f"'{claimed[0]}'"})
    if resume_dir is not None and "'" not in resume_dir:
        # continue in the resumed run's directory, leaving its .hydra/ as the original run wrote it; resume=auto
        # becomes the run it found, so the job does not search again
        args = _with_overrides(args, {"hydra.run.dir": f"'{resume_dir}'", "hydra.output_subdir": "null",
                                      **({"resume": f"'{resume_dir}'"} if _given(overrides, "resume") == "auto"
                                         else {})})
    sys.argv = [str(LAUNCH), *args]
    try:
        _hydra_entry()
    finally:
        if claimed is not None and claimed[1]:
            remove_if_unused(Path(claimed[0]))  # refused before training: leave no empty directory behind
    # jobs that ran in this process record their sweep directory; those of other processes (submitit) do not
    dirs = [claimed[0]] if multirun and claimed is not None else sorted(set(_SWEEP_DIRS))
    if multirun and any(next(Path(d).rglob("summary.json"), None) is not None for d in dirs):
        print()
        # the table, and comparison.csv/png in the (first) sweep dir; with wandb, the comparison run beside the jobs
        compare_dirs(dirs, wandb=any(c["logger"]["wandb"] for c in configs))


def _resume_hint(run_dir: Path) -> str:
    """How to continue a run that stopped on a file-system error."""
    if not any((run_dir / "checkpoints").glob("step-*.ckpt")):
        return "No checkpoint was written yet."
    return ("The checkpoints written before it are whole; once the cause is fixed, continue with: "
            f"clframe run resume={run_dir}")


def objective(summary: dict[str, Any], metric: str) -> float:
    """The value of ``metric`` in a run's summary, for a sweeper that optimises it; an unknown name is a
    ``ConfigError`` that lists the summary's numeric metrics."""
    value = summary.get(metric)
    if not isinstance(value, int | float) or isinstance(value, bool):
        numeric = sorted(k for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool))
        raise ConfigError(f"eval.metric={metric} is not a numeric metric of this run's summary; it has: "
                          f"{', '.join(numeric)}.")
    return float(value)


def optimising(hc: Any) -> bool:
    """Whether this job runs under a sweeper that optimises its return value (Hydra's Optuna sweeper)."""
    return "optuna" in str(getattr(hc.sweeper, "_target_", "")).lower()


def _make_hydra_entry():
    import hydra

    from clframe.config import CONFIG_DIR

    @hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
    def entry(cfg: Any) -> float | None:
        from hydra.core.hydra_config import HydraConfig

        from clframe.run.runner import run

        hc = HydraConfig.get()
        if hc.mode.name == "MULTIRUN":
            _SWEEP_DIRS.append(hc.sweep.dir)
        try:
            summary = run(cfg, hc.runtime.output_dir, overrides=list(hc.overrides.task),
                          sweep_dir=hc.sweep.dir if hc.mode.name == "MULTIRUN" else None, report=True)
            # a sweeper that optimises (Optuna) reads the job's return value; the others ignore it
            return objective(summary, cfg.eval.metric)
        except DivergenceError as e:
            if optimising(hc):  # a diverged trial is the worst trial, not the end of the study
                worst = float("inf") if "min" in str(hc.sweeper.get("direction", "")).lower() else float("-inf")
                print(f"error: {e} (this trial scores {worst})", file=sys.stderr)
                return worst
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        except USER_ERRORS as e:
            fail(e)
        except RunInterrupted as e:
            from clframe.run.distributed import is_main_rank

            if is_main_rank():
                print(f"\n{e}", file=sys.stderr)
            sys.exit(128 + e.signum)  # the shell's code for "stopped by this signal"
        except StorageError as e:
            print(f"error: {e} {_resume_hint(Path(hc.runtime.output_dir))}", file=sys.stderr)
            sys.exit(1)

    return entry


def _hydra_entry() -> None:
    from clframe.config.defaults import register

    register()  # the group options and monitors generated from the signatures, before Hydra composes
    _make_hydra_entry()()
