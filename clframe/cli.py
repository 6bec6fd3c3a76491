"""``clframe run | validate | list | compare``."""

from __future__ import annotations

import inspect
import itertools
import sys
from typing import Any

from clframe.errors import ConfigError, DatasetNotFoundError

USAGE = """usage:
  clframe run [-m] [key=value ...]     train (Hydra overrides; -m sweeps: strategy=naive,ewc seed=0,1)
  clframe validate [key=value ...]     compose, check and build a config without training
  clframe list                         every registered backbone, head, strategy, scenario, dataset
  clframe compare [DIR ...] [--metric NAME ...] [--out DIR]
                                       group runs (sweep or run directories) by config difference: a table
                                       of mean ± std over seeds, and comparison.csv + comparison.png
"""

USER_ERRORS = (ConfigError, DatasetNotFoundError)
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


def _precheck(overrides: list[str], multirun: bool) -> None:
    """Validate every job's config before any of them trains."""
    from clframe.config import compose, validate

    jobs = _sweep_combinations(overrides) if multirun else [overrides]
    for job in jobs:
        validate(compose(job))


def cmd_run(args: list[str]) -> None:
    multirun = any(a in ("-m", "--multirun") for a in args)
    _SWEEP_DIRS.clear()
    overrides = [a for a in args if not a.startswith("-")]
    try:
        _precheck(overrides, multirun)
    except USER_ERRORS as e:
        _fail(e)
    sys.argv = ["clframe run", *args]
    _hydra_entry()
    if multirun and _SWEEP_DIRS:
        print()
        _compare(sorted(set(_SWEEP_DIRS)))  # the table, and comparison.csv/png in the (first) sweep dir


def _make_hydra_entry():
    import hydra

    from clframe.config import CONFIG_DIR

    @hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
    def entry(cfg: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        from clframe.report import format_run
        from clframe.runner import run

        hc = HydraConfig.get()
        if hc.mode.name == "MULTIRUN":
            _SWEEP_DIRS.append(hc.sweep.dir)
        try:
            summary = run(cfg, hc.runtime.output_dir)
        except USER_ERRORS as e:
            _fail(e)
        print("\n" + format_run(summary) + "\n")

    return entry


def _hydra_entry() -> None:
    _make_hydra_entry()()


def cmd_validate(args: list[str]) -> None:
    from omegaconf import OmegaConf

    from clframe.config import compose
    from clframe.runner import build, quiet

    quiet()
    try:
        cfg = compose(args)
        built = build(cfg)
    except USER_ERRORS as e:
        _fail(e)
    print(OmegaConf.to_yaml(OmegaConf.create(built.config)))
    n_params = sum(p.numel() for p in built.module.parameters())
    print(f"OK: {built.scenario.name}; {len(built.scenario.stream)} experiences, "
          f"{sum(built.loader.steps_per_experience())} steps; model {n_params:,} parameters; "
          f"strategies: {', '.join(built.config['strategies']) or '(none)'}")


def _describe(fn: Any, provided: tuple[str, ...]) -> list[str]:
    from clframe.registry import signature_params
    from clframe.typecheck import type_name

    lines = []
    for p in signature_params(fn, provided).values():
        ann = "" if p.annotation is inspect.Parameter.empty else f": {type_name(p.annotation)}"
        default = "" if p.default is inspect.Parameter.empty else f" = {p.default!r}"
        lines.append(f"      {p.name}{ann}{default}")
    return lines or ["      (no parameters)"]


def cmd_list(args: list[str]) -> None:
    import dataclasses

    from clframe.config import SECTIONS, group_options
    from clframe.registry import REGISTRIES

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
    for group in ("scenario", "backbone", "head", "strategy", "experiment"):
        print(f"config group {group}/: {', '.join(group_options(group))}")


def _compare(paths: list[str], metrics: list[str] | None = None, out: str | None = None) -> None:
    from clframe.compare import compare

    try:
        compare(paths, metrics=metrics, out=out)
    except USER_ERRORS as e:
        _fail(e)


def cmd_compare(args: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="clframe compare", allow_abbrev=False,
        description="Group runs by how their configs differ (seeds aside), print mean ± std over seeds, and "
                    "write comparison.csv and comparison.png (accuracy curves over training steps).")
    parser.add_argument("paths", nargs="*", metavar="DIR",
                        help="run or sweep directories, searched recursively (default: runs/ multirun/)")
    parser.add_argument("--metric", action="append", metavar="NAME",
                        help="a numeric summary.json key to show; repeatable or comma-separated (default: "
                             "final_avg_acc, avg_forgetting, bwt, and min_acc, wc_acc, stability_gap_depth "
                             "when recorded)")
    parser.add_argument("--out", metavar="DIR", help="where comparison.csv/png go (default: the first DIR)")
    ns = parser.parse_args(args)
    _compare(ns.paths or ["runs", "multirun"], ns.metric, ns.out)


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "list": cmd_list, "compare": cmd_compare}


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
