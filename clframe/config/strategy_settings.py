"""Per-strategy settings: ``strategy_settings.<name>`` holds settings of strategy ``<name>`` that apply
only to the runs that choose it.

Hydra applies every override of a sweep to every job, so ``clframe run -m strategy=naive,replay,ewc
strategies.replay.mem_size=500`` as written fails for the jobs without ``strategies.replay``. ``clframe
run`` rewrites such an override (``strategies.<name>.<key>=<value>``, ``<name>`` one of the swept
strategies that some job does not choose) into ``++strategy_settings.<name>.<key>=<value>``, and
``validate`` merges ``strategy_settings.<name>`` into ``strategies.<name>`` where the run chooses
``<name>`` and drops it elsewhere: every run's config is the one its job would have alone. An
experiment's YAML may hold the same block (``strategy_settings: {replay: {mem_size: 500}}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clframe.config.registry import STRATEGIES, signature_params
from clframe.errors import ConfigError, did_you_mean

KEY = "strategy_settings"


@dataclass(frozen=True)
class PerStrategy:
    """One override of a strategy sweep that sets a strategy's settings for the jobs choosing it.

    Args:
        line: the override as written (``strategies.replay.mem_size=500``).
        name: the strategy (``replay``).
        rewritten: the form Hydra gets (``++strategy_settings.replay.mem_size=500``).
    """

    line: str
    name: str
    rewritten: str


def _names(choice: Any) -> set[str]:
    """The strategy names of one ``strategy=`` choice (a name or a list of names)."""
    return {str(c) for c in choice} if isinstance(choice, list) else {str(choice)}


def job_strategies(job: list[str]) -> set[str] | None:
    """The strategies a job's plain overrides choose (``strategy=replay``); None if they do not say."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    chosen = None
    for o in OverridesParser.create().parse_overrides(job):
        if o.key_or_group == "strategy" and not o.is_delete() and not o.is_sweep_override():
            chosen = _names(o.value())
    return chosen


def per_strategy(overrides: list[str]) -> list[PerStrategy]:
    """The overrides of a multirun that set a swept strategy's settings (``strategies.<name>.<key>=...``,
    no ``+``/``~``, ``<name>`` registered) where some job of the ``strategy=`` sweep does not choose
    ``<name>``. Its key is checked here, as written (the jobs without ``<name>`` see it only in its
    rewritten form); it may not sweep values itself: the other jobs would repeat once per value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # Hydra's parse error, as check_overrides words it
        raise ConfigError(f"Cannot parse overrides {overrides}: {e}") from e
    choices: list[set[str]] = []
    for o in parsed:
        if o.key_or_group == "strategy" and o.is_sweep_override():
            try:
                choices += [_names(v) for v in o.sweep_iterator()]
            except HydraException:  # glob(...): its options need Hydra's config loader; left as written
                return []
    found = []
    for o in parsed:
        parts = o.key_or_group.split(".")
        if (parts[0] != "strategies" or len(parts) < 3 or o.is_add() or o.is_force_add() or o.is_delete()
                or not o.input_line.startswith("strategies.")):
            continue
        name = parts[1]
        if not (any(name in c for c in choices) and any(name not in c for c in choices)) or \
                name not in STRATEGIES.names():
            continue
        if errors := unknown_keys(f"strategies.{name}", name, [parts[2]]):
            raise ConfigError(errors[0])
        if o.is_sweep_override():
            raise ConfigError(
                f"'{o.input_line}' sweeps a setting of {name} in a sweep with jobs without {name}: each of them "
                f"would run once per value, with the same config. Sweep it in a sweep of its own, e.g. 'clframe run "
                f"-m strategy={name} {o.input_line}', and compare both sweep directories (clframe compare A B).")
        found.append(PerStrategy(o.input_line, name, f"++{KEY}{o.input_line[len('strategies'):]}"))
    return found


def describe(p: PerStrategy, jobs: list[list[str]]) -> str:
    """One line saying which jobs of the sweep (their numbers, as in ``<n>-<strategy>-s<seed>``) ``p``
    applies to."""
    nums = [str(i) for i, job in enumerate(jobs) if p.name in (job_strategies(job) or set())]
    return (f"{p.line}: only the {len(nums)} of {len(jobs)} jobs that choose {p.name} "
            f"(job{'s' if len(nums) > 1 else ''} {', '.join(nums)}).")


def _merge(node: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """``node`` with ``settings`` merged in (nested mappings key by key)."""
    out = dict(node)
    for k, v in settings.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply(plain: dict[str, Any], errors: list[str]) -> None:
    """Merge ``plain['strategy_settings']`` into the chosen ``strategies`` and drop it (the merged nodes
    are checked with the other strategies); the settings of a strategy not chosen must still name a
    strategy and its parameters (a typo guard), and are dropped."""
    settings = plain.pop(KEY, None) or {}
    strategies = plain.get("strategies")
    if not isinstance(settings, dict):
        errors.append(f"'{KEY}' must be a mapping of strategy name -> settings, got {settings!r}.")
        return
    for name, values in settings.items():
        label = f"{KEY}.{name}"
        if not isinstance(values, dict):
            errors.append(f"'{label}' must be a mapping of setting -> value, got {values!r}.")
        elif isinstance(strategies, dict) and name in strategies:
            strategies[name] = _merge(strategies[name] or {}, values)
        elif name not in STRATEGIES.names():
            valid = sorted({*STRATEGIES.names(), *(strategies if isinstance(strategies, dict) else {})})
            errors.append(f"Unknown strategy '{name}' in '{label}'.{did_you_mean(name, valid)} "
                          f"Valid: {', '.join(valid)}.")
        else:
            errors += unknown_keys(label, name, list(values))


def unknown_keys(label: str, name: str, keys: list[str]) -> list[str]:
    """An error for each of ``keys`` that is not a parameter of registered strategy ``name``."""
    try:
        params = signature_params(STRATEGIES.get(name), STRATEGIES.provided)
    except ConfigError as e:  # a plug-in that fails to load
        return [str(e)]
    return [f"Unknown key '{label}.{k}' for strategy '{name}'.{did_you_mean(k, params)} "
            f"Valid keys: {', '.join(params) or '(none)'}." for k in keys if k not in params]
