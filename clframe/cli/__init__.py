"""``clframe run | validate | list | compare | ablate``."""

from __future__ import annotations

import inspect
import itertools
import sys
from pathlib import Path
from typing import Any

from clframe.errors import ConfigError, DatasetNotFoundError, DivergenceError, RunInterrupted, StorageError

USAGE = """usage:
  clframe run [-m] [key=value ...]     train (Hydra overrides; -m sweeps: strategy=naive,ewc seed=0,1)
  clframe validate [key=value ...]     compose, check and build a config without training
  clframe list                         every registered backbone, head, strategy, scenario, dataset
  clframe compare [DIR ...] [--metric NAME ...] [--out DIR]
                                       group runs (sweep or run directories) by config difference: a table
                                       of mean ± std over seeds, and comparison.csv + comparison.png
  clframe ablate RUN_DIR [--fractions 0,0.1,0.25,0.5] [--order random|shortest_tau|longest_tau]
                                       scores with a fraction of a recurrent backbone's units silenced
"""

USER_ERRORS = (ConfigError, DatasetNotFoundError)
# the script Lightning's DDP launcher re-runs for the other ranks (a path, not an import: launch imports this)
LAUNCH = Path(__file__).with_name("launch.py")
_SWEEP_DIRS: list[str] = []


def _fail(e: Exception) -> None:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def _sweep_combinations(overrides: list[str]) -> list[list[str]]:
    """Expand Hydra sweep overrides (``a=1,2``) into the plain override lists of every job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(c) for c in itertools.product(*choices)]


def _precheck(overrides: list[str], multirun: bool) -> list[dict[str, Any]]:
    """Validate every job's config before any of them trains; return them."""
    from clframe.config import compose, validate

    jobs = _sweep_combinations(overrides) if multirun else [overrides]
    return [validate(compose(job)) for job in jobs]


def _claim_dir(overrides: list[str], multirun: bool, identity: Any) -> tuple[str, bool] | None:
    """The run directory (the sweep directory with ``multirun``) this invocation writes to, created
    now, before Hydra runs anything, as an absolute path; and whether this call created it.

    The shipped default name gets a short hash of ``identity`` (the resolved config, or the
    sweep's overrides) and the next free suffix if it is taken (``clframe.run.rundir.claim``); a
    directory the user set is used as given unless it holds another run. Passed back as a
    ``hydra.run.dir``/``hydra.sweep.dir`` override, it also fixes where every job of a sweep
    writes, whichever process runs it. None where Hydra must resolve it (``${hydra:...}``)."""
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
    path, created = claim(Path(f"{wanted}-{short_hash(identity)}" if default else wanted).absolute(), unique=default)
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
        configs = _precheck(overrides, multirun)
        resume_dir = None if multirun else _resume_dir(overrides)
        if resume_dir is None and not launched_child():  # rank > 0 writes where rank 0 claimed
            claimed = _claim_dir(overrides, multirun, overrides if multirun else configs[0])
    except (*USER_ERRORS, StorageError) as e:
        _fail(e)
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
        _compare(dirs)  # the table, and comparison.csv/png in the (first) sweep dir


def _resume_hint(run_dir: Path) -> str:
    """How to continue a run that stopped on a file-system error."""
    if not any((run_dir / "checkpoints").glob("step-*.ckpt")):
        return "No checkpoint was written yet."
    return ("The checkpoints written before it are whole; once the cause is fixed, continue with: "
            f"clframe run resume={run_dir}")


def _make_hydra_entry():
    import hydra

    from clframe.config import CONFIG_DIR

    @hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
    def entry(cfg: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        from clframe.run.report import format_run
        from clframe.run.runner import run

        hc = HydraConfig.get()
        if hc.mode.name == "MULTIRUN":
            _SWEEP_DIRS.append(hc.sweep.dir)
        try:
            summary = run(cfg, hc.runtime.output_dir, overrides=list(hc.overrides.task))
        except USER_ERRORS as e:
            _fail(e)
        except RunInterrupted as e:
            from clframe.run.distributed import is_main_rank

            if is_main_rank():
                print(f"\n{e}", file=sys.stderr)
            sys.exit(128 + e.signum)  # the shell's code for "stopped by this signal"
        except DivergenceError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        except StorageError as e:
            print(f"error: {e} {_resume_hint(Path(hc.runtime.output_dir))}", file=sys.stderr)
            sys.exit(1)
        if summary:  # empty on the other ranks of a multi-process run: rank 0 reports
            print("\n" + format_run(summary) + "\n")

    return entry


def _hydra_entry() -> None:
    _make_hydra_entry()()


def cmd_validate(args: list[str]) -> None:
    from omegaconf import OmegaConf

    from clframe.config import compose
    from clframe.data.offline import offline
    from clframe.run.runner import build, quiet

    quiet()
    try:
        cfg = compose(args)
        with offline():  # validate never downloads: a missing dataset is reported instead
            built = build(cfg)
    except USER_ERRORS as e:
        _fail(e)
    print(OmegaConf.to_yaml(OmegaConf.create(built.config)))
    n_params = sum(p.numel() for p in built.module.parameters())
    print(f"OK: {built.scenario.name}; {len(built.scenario.stream)} experiences, "
          f"{'at most ' if built.scenario.curriculum is not None else ''}"
          f"{sum(built.loader.steps_per_experience())} steps; model {n_params:,} parameters; "
          f"strategies: {', '.join(built.config['strategies']) or '(none)'}")


def _describe(fn: Any, provided: tuple[str, ...]) -> list[str]:
    from clframe.config.registry import signature_params
    from clframe.config.typecheck import type_name

    lines = []
    for p in signature_params(fn, provided).values():
        ann = "" if p.annotation is inspect.Parameter.empty else f": {type_name(p.annotation)}"
        default = "" if p.default is inspect.Parameter.empty else f" = {p.default!r}"
        lines.append(f"      {p.name}{ann}{default}")
    return lines or ["      (no parameters)"]


def cmd_list(args: list[str]) -> None:
    import dataclasses

    from clframe.config import SECTIONS, group_options
    from clframe.config.registry import REGISTRIES

    for reg in REGISTRIES.values():
        print(f"{reg.plural} (entry-point group {reg.group}):")
        for name in reg.names():
            fn = reg.get(name)
            doc = (inspect.getdoc(fn) or "").split("\n")[0]
            print(f"  {name}  ({fn.__module__}.{fn.__qualname__})  {doc}")
            print("\n".join(_describe(fn, reg.provided)))
    for section, cls in SECTIONS.items():
        print(f"{section}:")
        for f in dataclasses.fields(cls):
            print(f"      {f.name} = {f.default!r}")
    for group in ("scenario", "backbone", "head", "hypernet", "strategy", "experiment"):
        print(f"config group {group}/: {', '.join(group_options(group))}")


def _compare(paths: list[str], metrics: list[str] | None = None, out: str | None = None,
             plasticity_metric: str = "task_end") -> None:
    from clframe.compare import compare

    try:
        compare(paths, metrics=metrics, out=out, plasticity_metric=plasticity_metric)
    except USER_ERRORS as e:
        _fail(e)


def cmd_compare(args: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="clframe compare", allow_abbrev=False,
        description="Group runs by how their configs differ (seeds aside), print mean ± std over seeds, and "
                    "write comparison.csv and comparison.png (accuracy curves over training steps), and, for runs "
                    "with eval.plasticity=true, plasticity_comparison.png (per-task accuracy, dead units, "
                    "largest sigma_max, effective rank), and, for runs with eval.online=true, "
                    "online_comparison.png (online accuracy or error, predictive log-likelihood, windowed ECE, "
                    "the head's learned gamma / noise / temperature).")
    parser.add_argument("paths", nargs="*", metavar="DIR",
                        help="run or sweep directories, searched recursively (default: runs/ multirun/)")
    parser.add_argument("--metric", action="append", metavar="NAME",
                        help="a numeric summary.json key to show; repeatable or comma-separated (default: "
                             "final_avg_acc, avg_forgetting, bwt, and min_acc, wc_acc, stability_gap_depth "
                             "when recorded)")
    parser.add_argument("--out", metavar="DIR", help="where comparison.csv/png go (default: the first DIR)")
    parser.add_argument("--plasticity-metric", choices=("task_end", "online"), default="task_end",
                        help="first panel of plasticity_comparison.png: end-of-task accuracy (default) or the "
                             "online accuracy/error per task")
    ns = parser.parse_args(args)
    _compare(ns.paths or ["runs", "multirun"], ns.metric, ns.out, ns.plasticity_metric)


def cmd_ablate(args: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="clframe ablate", allow_abbrev=False,
        description="Silence a fraction of every recurrent layer's units (gru, lstm, tau_rnn) in a finished run's "
                    "last checkpoint and evaluate each experience; writes ablation.json and plots/ablation.png "
                    "into the run directory.")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--fractions", default="0,0.1,0.25,0.5", help="comma-separated (default 0,0.1,0.25,0.5)")
    parser.add_argument("--order", default="random", choices=("random", "shortest_tau", "longest_tau"),
                        help="which units go first (default random; the tau orders need tau_rnn)")
    parser.add_argument("--repeats", type=int, default=5, help="random draws per fraction (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trust", action="store_true",
                        help="let the run's stored config import dotted paths (components that are not registered)")
    ns = parser.parse_args(args)
    from clframe.evaluation.ablation import ablate_run

    try:
        out = ablate_run(ns.run_dir, [float(f) for f in ns.fractions.split(",")], ns.order, ns.repeats, ns.seed,
                         ns.trust)
    except USER_ERRORS as e:
        _fail(e)
    print(f"{'silenced':>9}  " + "  ".join(f"{str(n):>7}" for n in out["experiences"]))
    for f, row in zip(out["fractions"], out["mean"]):
        print(f"{f:>9.2f}  " + "  ".join(f"{v:7.3f}" for v in row))
    print(f"written: {Path(ns.run_dir) / 'ablation.json'}")


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "list": cmd_list, "compare": cmd_compare, "ablate": cmd_ablate}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] not in COMMANDS:
        from clframe.errors import unknown

        _fail(unknown("command", argv[0], COMMANDS))
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
    sys.exit(0)
