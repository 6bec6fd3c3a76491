"""The runs of a ``clframe compare``: read them, and group them by how their configs differ.

Runs are the directories holding a ``summary.json`` (with its ``config.yaml`` and ``metrics.csv``).
Their resolved configs are flattened to dotted keys; the keys whose values differ across runs (leaving
out the seed and what is derived from it, paths and display-only settings) define the groups, and a
group's label is those values (``strategies=replay, strategies.replay.mem_size=100``). Runs that differ
in their scenario or experiment name are still tabulated, but flagged as not comparable.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clframe.errors import unknown

DEFAULT_METRICS = ("final_avg_acc", "avg_forgetting", "bwt")
# shown by default when the summaries have them (online.online_acc: the prequential accuracy, monitors.online)
OPTIONAL_METRICS = ("aaa", "min_acc", "wc_acc", "stability_gap_depth", "online.online_acc")
STRATEGIES = "strategies"  # the pseudo-key holding the joined strategy names, e.g. "replay+ewc"
DISPLAY_ONLY = frozenset({"logger.progress", "logger.log_every"})  # settings that cannot change results
_PATH_LIKE = re.compile(r"(^|_)(dir|path|root|file)s?$")
# scenario keys that change only what trains, not what is evaluated: runs that differ in them score on the
# same eval data. scenario.cumulative (each experience trains on experiences 0..i) is the cumulative upper
# bound's stream, which an experiment sets with strategy=cumulative (baselines_split_mnist);
# scenario.boundaries=hidden keeps the experience boundaries from the strategies, not from evaluation.
TRAINING_ONLY = frozenset({"scenario.cumulative", "scenario.boundaries"})


class _Marker:
    """A stand-in config value: how a key is missing from a run."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


_NA = _Marker("<n/a>")  # the key's parent node does not exist in this run (e.g. another strategy's parameter)
_UNSET = _Marker("<unset>")  # the parent exists but the key does not
_NODE = _Marker("<mapping>")  # the key is a mapping here, a value elsewhere
CSV_NAME, PNG_NAME = "comparison.csv", "comparison.png"


# -- runs ----------------------------------------------------------------------------------------

@dataclass(eq=False)
class Run:
    """One run directory: its summary, resolved config, and (read on demand, once) its curve."""

    dir: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    leaves: dict[str, Any] = field(init=False, repr=False)
    nodes: set[str] = field(init=False, repr=False)
    _curve: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.leaves, self.nodes = flatten(self.config)

    @property
    def seed(self) -> Any:
        return self.summary.get("seed", self.config.get("seed"))

    def value(self, key: str) -> Any:
        """The config value at ``key``; ``_UNSET`` when its parent exists without it, ``_NA`` otherwise."""
        if key in self.leaves:
            return self.leaves[key]
        if key in self.nodes:
            return _NODE
        return _UNSET if key.rpartition(".")[0] in self.nodes else _NA

    def curve(self) -> tuple[list[int], list[float], str] | None:
        """(steps, accuracy averaged over the experiences evaluated at each step, source) from metrics.csv."""
        if self._curve is None:
            from clframe.compare.curves import read_curve

            self._curve = read_curve(self.dir / "metrics.csv") or ()
        return self._curve or None


def strategy_names(strategies: Any) -> str:
    names = list(strategies or [])
    return "+".join(map(str, names)) or "naive"


def flatten(config: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """Dotted leaf keys -> values, and the dotted paths of every mapping (``""`` is the root).

    Lists are leaves. ``strategies`` also becomes a leaf: the joined names of the strategies.
    """
    leaves: dict[str, Any] = {}
    nodes: set[str] = set()

    def walk(node: dict[str, Any], prefix: str) -> None:
        nodes.add(prefix)
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if key == STRATEGIES:
                leaves[STRATEGIES] = strategy_names(v)
            if isinstance(v, dict):
                walk(v, key)
            elif key != STRATEGIES:
                leaves[key] = v

    walk(config, "")
    return leaves, nodes


def _natural(path: Path) -> list[Any]:
    """Sort key putting ``2-replay-s0`` before ``10-naive-s0`` (Hydra's job order)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(path)) if t]


def _config_from_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """A stand-in config for a run directory without config.yaml."""
    return {
        "seed": summary.get("seed"),
        "experiment_name": summary.get("experiment_name"),
        "scenario": {"description": summary.get("scenario")},
        STRATEGIES: {name: {} for name in summary.get("strategies") or []},
    }


def make_run(run_dir: Path, summary: dict[str, Any]) -> Run:
    """A Run from an already-read summary; config.yaml is read here if the directory has one."""
    import yaml

    cfg_file = run_dir / "config.yaml"
    config = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else None
    return Run(run_dir, summary, config if isinstance(config, dict) else _config_from_summary(summary))


def summary_files(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``summary.json`` under the given paths (or the paths themselves), once, in Hydra job order."""
    found: dict[Path, Path] = {}
    for p in map(Path, paths):
        files = [p] if p.name == "summary.json" and p.is_file() else p.rglob("summary.json") if p.is_dir() else []
        for f in files:
            found.setdefault(f.resolve(), f)
    return sorted(found.values(), key=_natural)


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """A Run for every ``summary.json`` under ``paths``; unreadable ones are skipped with a warning."""
    runs = []
    for f in summary_files(paths):
        try:
            summary = json.loads(f.read_text())
            runs.append(make_run(f.parent, summary | {"run_dir": str(f.parent)}))
        except (OSError, ValueError) as e:
            from clframe.compare.console import warning

            warning(f"skipping {f}: {e}")
    return runs


def _canon(value: Any) -> str:
    if isinstance(value, _Marker):
        return value.text
    return json.dumps(value, sort_keys=True, default=str)


def _fmt(value: Any) -> str:
    """A config value as it reads in a label: strings bare, the rest as JSON (``[16]``, ``null``, ``0.05``)."""
    if isinstance(value, str):
        return value
    return value.text if isinstance(value, _Marker) else json.dumps(value, default=str)


def ignored_key(key: str) -> bool:
    """The seed itself, paths and directories, display-only settings."""
    return key == "seed" or key in DISPLAY_ONLY or bool(_PATH_LIKE.search(key.rpartition(".")[2]))


def _seed_derived(pairs: list[tuple[Run, Any]]) -> bool:
    return all(type(v) is int and v == r.seed for r, v in pairs)


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Flattened config keys whose values differ across runs, in config order.

    A key only counts in the runs where its parent exists (``strategies.replay.mem_size`` is not compared
    with runs without replay: the ``strategies`` key tells those apart), and a component's parameter only
    among runs of the same component (``head.gamma`` of ``head.name=kalman`` runs is not compared with
    ``head.name=linear`` runs: ``head.name`` tells those apart). Ignored: the seed, keys whose value is
    the run's seed in every run (``scenario.seed: ${seed}``), paths and display-only settings.
    """
    order: dict[str, None] = {}
    for r in runs:
        order.update(dict.fromkeys(r.leaves))
    keys = []
    for key in order:
        if ignored_key(key):
            continue
        pairs = [(r, v) for r in runs if (v := r.value(key)) is not _NA]
        name_key = key.rpartition(".")[0] + ".name"
        by_component: dict[str, list[tuple[Run, Any]]] = {}
        for r, v in pairs:
            component = _canon(r.value(name_key)) if key != name_key else ""
            by_component.setdefault(component, []).append((r, v))
        if any(len({_canon(v) for _, v in ps}) > 1 and not _seed_derived(ps) for ps in by_component.values()):
            keys.append(key)
    for key in TRAINING_ONLY & set(keys):  # set with the strategy (one value per strategy set): not a group key
        by_strategy = {}
        for r in runs:
            by_strategy.setdefault(_canon(r.value(STRATEGIES)), set()).add(_canon(r.value(key)))
        if STRATEGIES in keys and all(len(v) == 1 for v in by_strategy.values()):
            keys.remove(key)
    if STRATEGIES in keys:  # the strategy set first: it reads best at the start of a label
        keys.remove(STRATEGIES)
        keys.insert(0, STRATEGIES)
    return keys


def is_scenario_key(key: str) -> bool:
    """Keys that make results incomparable when they differ (``TRAINING_ONLY`` keys do not)."""
    return key == "experiment_name" or key == "scenario" or (key.startswith("scenario.") and key not in TRAINING_ONLY)


@dataclass
class Group:
    label: str
    values: dict[str, Any]  # differing key -> this group's value (keys that do not apply are left out)
    runs: list[Run]

    @property
    def scenario(self) -> str:
        """This group's values on the scenario keys, as text (``""`` when the scenario is shared)."""
        return ", ".join(f"{k}={_fmt(v)}" for k, v in self.values.items() if is_scenario_key(k))


@dataclass
class Comparison:
    runs: list[Run]
    keys: list[str]  # the differing config keys that define the groups
    groups: list[Group]

    @property
    def scenario_keys(self) -> list[str]:
        return [k for k in self.keys if is_scenario_key(k)]

    @property
    def comparable(self) -> bool:
        return not self.scenario_keys

    @property
    def experiments(self) -> list[str]:
        return list(dict.fromkeys(str(r.summary.get("experiment_name", "?")) for r in self.runs))


def group_runs(runs: Sequence[Run]) -> Comparison:
    """Groups of runs with identical values on every differing key, in the order they first appear
    (groups of one scenario together)."""
    keys = differing_keys(runs)
    by_values: dict[tuple[str, ...], Group] = {}
    for r in runs:
        vals = {k: r.value(k) for k in keys}
        sig = tuple(_canon(v) for v in vals.values())
        if sig not in by_values:
            # left out: keys that do not apply here (another strategy's, another component's parameter)
            shown = {k: v for k, v in vals.items()
                     if v is not _NA and not (v is _UNSET and k.rpartition(".")[0] + ".name" in r.leaves)}
            label = ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
            by_values[sig] = Group(label or f"{STRATEGIES}={_fmt(r.value(STRATEGIES))}", shown, [])
        by_values[sig].runs.append(r)
    groups = list(by_values.values())
    scenario_order = list(dict.fromkeys(g.scenario for g in groups))
    groups.sort(key=lambda g: scenario_order.index(g.scenario))  # stable: same-scenario groups together
    return Comparison(list(runs), keys, groups)


# -- metrics -------------------------------------------------------------------------------------

def metric_value(summary: dict[str, Any], name: str) -> float | None:
    """A numeric summary value (dotted names reach into nested dicts); None when absent, null or NaN."""
    v: Any = summary
    for part in [name] if name in summary else name.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def numeric_keys(runs: Sequence[Run]) -> list[str]:
    """Every numeric summary key of the runs (one level into nested dicts)."""
    keys: dict[str, None] = {}
    for r in runs:
        for k, v in r.summary.items():
            items = [(f"{k}.{k2}", v2) for k2, v2 in v.items()] if isinstance(v, dict) else [(k, v)]
            keys.update({name: None for name, x in items if isinstance(x, int | float) and not isinstance(x, bool)})
    return list(keys)


def resolve_metrics(runs: Sequence[Run], requested: Iterable[str] | None = None) -> list[str]:
    """The metrics to show: the requested ones (repeatable, comma-separated), or the defaults.

    Raises:
        ConfigError: a requested metric is not a numeric summary key of any run.
    """
    names = list(dict.fromkeys(n.strip() for item in requested or [] for n in item.split(",") if n.strip()))
    if not names:
        present = [m for m in OPTIONAL_METRICS if any(metric_value(r.summary, m) is not None for r in runs)]
        return [*DEFAULT_METRICS, *present]
    for name in names:
        if not any(metric_value(r.summary, name) is not None for r in runs):
            raise unknown("metric", name, numeric_keys(runs))
    return names


def not_comparable_message(cmp: Comparison) -> str:
    """Which scenario keys differ, with their values, and which groups share each scenario."""
    lines = ["runs differ in their scenario, so their results are NOT comparable:"]
    for k in cmp.scenario_keys:
        values = dict.fromkeys(_fmt(r.value(k)) for r in cmp.runs if r.value(k) is not _NA)
        lines.append(f"  {k}: {', '.join(values)}")
    lines.append("groups in different scenarios cannot be compared with each other:")
    by_scenario: dict[str, list[str]] = {}
    for g in cmp.groups:
        by_scenario.setdefault(g.scenario, []).append(g.label)
    lines += [f"  [{scn}] {'; '.join(labels)}" for scn, labels in by_scenario.items()]
    return "\n".join(lines)
