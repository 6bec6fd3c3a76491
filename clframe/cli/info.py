"""``clframe validate`` (compose, check and build a config without training) and ``clframe list``
(every registered component, its parameters and defaults)."""

from __future__ import annotations

import inspect
from typing import Any

from clframe.cli.common import USER_ERRORS, fail


def cmd_validate(args: list[str]) -> None:
    from omegaconf import OmegaConf

    from clframe.config import compose
    from clframe.data.offline import offline
    from clframe.run.build import build, quiet

    quiet()
    try:
        cfg = compose(args)
        with offline():  # validate never downloads: a missing dataset is reported instead
            built = build(cfg)
    except USER_ERRORS as e:
        fail(e)
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
