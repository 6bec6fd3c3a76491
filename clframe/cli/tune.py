"""``clframe tune``: choose each strategy's hyper-parameters under a protocol, then score the choice on the
evaluation stream over seeds (``clframe.tune``; docs/methods/tuning.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clframe.cli.common import USER_ERRORS, fail
from clframe.errors import ConfigError

# the command's own settings; every other key=value is a Hydra override given to every job
DEFAULTS: dict[str, Any] = {
    "protocol": None, "strategies": None, "experiment": None, "tune_experiment": None, "trials": 20, "seeds": 3,
    "sampler": "tpe", "storage": None, "out": None, "validation": 0.1, "first_experiences": 1,
    "metric": "final_avg_acc", "reference": True, "search_dir": None,
}
USAGE = ("clframe tune [preset=<configs/tune/NAME>] protocol=test|end|first_task|gtep strategies=naive,ewc,... "
         "experiment=<evaluation experiment> "
         "[tune_experiment=<experiment> (gtep)] [trials=20] [seeds=3] [sampler=tpe|grid] [validation=0.1] "
         "[first_experiences=1] [metric=final_avg_acc] [reference=true] [storage=<optuna url>] [out=<dir>] "
         "[search_dir=<dir>] [any Hydra override for every job, e.g. train.epochs=5 hydra/launcher=submitit_local]")


def parse(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The command's settings (``DEFAULTS`` filled in) and the overrides for the jobs."""
    settings, extra = dict(DEFAULTS), []
    given = {}
    for a in args:
        key, eq, value = a.partition("=")
        if key in DEFAULTS and eq:
            given[key] = value
        elif key == "preset" and eq:
            settings.update(load_preset(value))
        else:
            extra.append(a)
    settings.update(given)  # the command line wins over a preset
    missing = [k for k in ("protocol", "strategies", "experiment") if not settings[k]]
    if missing:
        raise ConfigError(f"clframe tune needs {', '.join(missing)}. Usage: {USAGE}")
    try:
        for k in ("trials", "seeds", "first_experiences"):
            settings[k] = int(settings[k])
        settings["validation"] = float(settings["validation"])
    except ValueError as e:
        raise ConfigError(f"clframe tune: {e}. Usage: {USAGE}") from e
    settings["reference"] = str(settings["reference"]).lower() in ("true", "1", "yes")
    settings["strategies"] = [s for s in str(settings["strategies"]).strip("[]").split(",") if s]
    if settings["sampler"] not in ("tpe", "grid"):
        raise ConfigError(f"sampler={settings['sampler']}: use tpe or grid.")
    if settings["trials"] < 1 or settings["seeds"] < 1:
        raise ConfigError("trials and seeds must be >= 1.")
    return settings, extra


def load_preset(name: str) -> dict[str, Any]:
    """The settings of ``configs/tune/<name>.yaml`` (or a file path)."""
    from omegaconf import OmegaConf

    from clframe.config.paths import CONFIG_DIR

    path = Path(name) if name.endswith(".yaml") else CONFIG_DIR / "tune" / f"{name}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in (CONFIG_DIR / "tune").glob("*.yaml"))
        raise ConfigError(f"preset={name}: no {path}. Shipped presets: {', '.join(shipped)}.")
    preset = OmegaConf.to_container(OmegaConf.load(path))
    unknown = sorted(set(preset) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"preset {path}: unknown settings {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}.")
    return {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in preset.items()}


def tune_protocol(protocol: str, s: dict[str, Any], extra: list[str], out: Path) -> dict[str, dict[str, Any]]:
    """Tune and evaluate every strategy under ``protocol``; per strategy its choice and scores."""
    from clframe.tune.protocols import get_protocol, tuning_overrides
    from clframe.tune.search import check_space, load_space
    from clframe.tune.study import Study, best_trial, evaluate, mean_std, run_study

    p = get_protocol(protocol)
    tuning = tuning_overrides(p, s["experiment"], s["tune_experiment"], s["validation"], s["first_experiences"])
    stream = tuning[0].split("=", 1)[1]
    spaces = {name: load_space(name, s["search_dir"]) for name in s["strategies"]}
    for name, (space, path) in spaces.items():
        check_space(name, space, path)
        continuous = [k for k, v in space.items() if "interval" in v]
        if s["sampler"] == "grid" and continuous:
            raise ConfigError(f"sampler=grid enumerates choice(...) and range(...) dimensions only; {path} has "
                              f"continuous ones: {', '.join(continuous)}. Use sampler=tpe, or a search_dir whose "
                              f"{name}.yaml gives them as choices.")
    results = {}
    for name, (space, _) in spaces.items():
        where = out / tag(p, s) / name
        study = Study(f"{tag(p, s)}-{stream}-{name}", s["storage"], s["trials"], s["sampler"])
        ran = run_study(study, name, space, [*tuning, f"logger.group=tune/{protocol}/{name}"], where / "trials",
                        s["metric"], extra)
        params, score = best_trial(study)
        # one folder per chosen configuration: a study continued later may choose another
        evals = evaluate(name, params, s["experiment"], s["seeds"], where / f"eval-{params_id(params)}", s["metric"],
                         extra)
        mean, std = mean_std(evals)
        results[name] = {"chosen": params, "tuning_score": score, "eval_scores": evals, "eval_mean": mean,
                         "eval_std": std, "gap": score - mean, "trials_run_now": ran}
        print(f"[{protocol}] {name}: tuning {score:.3f} -> evaluation {mean:.3f} ± {std:.3f} ({ran} trials run now)")
    return results


def tag(p: Any, s: dict[str, Any]) -> str:
    """The protocol's name with what changes its tuning data (its folder, study and result files):
    ``first_task-2`` tunes on the first 2 experiences, ``end-val0.2`` on a 20% validation split."""
    out = p.name + (f"-{s['first_experiences']}" if p.first and s["first_experiences"] != 1 else "")
    return out + (f"-val{s['validation']:g}" if p.validation and s["validation"] != 0.1 else "")


def params_id(params: dict[str, Any]) -> str:
    """A short stable name of a configuration."""
    import hashlib
    import json

    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]


def describe(p: Any, s: dict[str, Any], extra: list[str]) -> str:
    """One line: what was tuned on what, and how it was evaluated."""
    tuned_on = s["tune_experiment"] if p.other_stream else s["experiment"]
    data = "test data" if not p.validation else f"validation {s['validation']:g}"
    if p.first:
        data += f", first {s['first_experiences']} experience(s)"
    return (f"protocol {p.name}: {p.summary}; tuned on {tuned_on} ({data}), {s['trials']} trials per strategy "
            f"({s['sampler']}); evaluated on {s['experiment']} over {s['seeds']} seeds; metric {s['metric']}; "
            f"extra overrides: {' '.join(extra) or 'none'}")


def cmd_tune(args: list[str]) -> None:
    from clframe.tune.protocols import get_protocol
    from clframe.tune.report import ranks, write

    try:
        s, extra = parse(args)
        p = get_protocol(s["protocol"])
        out = Path(s["out"] or f"tune/{s['experiment']}").absolute()
        out.mkdir(parents=True, exist_ok=True)
        s["storage"] = s["storage"] or f"sqlite:///{out / 'studies.db'}"
        results = tune_protocol(p.name, s, extra, out)
        reference = s["reference"] and p.name != "test"
        test = tune_protocol("test", s, extra, out) if reference else {}
    except USER_ERRORS as e:
        fail(e)
    rank = ranks({k: r["eval_mean"] for k, r in results.items()})
    test_rank = ranks({k: r["eval_mean"] for k, r in test.items()}) if test else {}
    rows = [{"strategy": k, **r, "rank": rank[k],
             **({"test_mean": test[k]["eval_mean"], "test_std": test[k]["eval_std"], "test_rank": test_rank[k]}
                if test else {})} for k, r in results.items()]
    for r in rows:
        r.pop("trials_run_now")
    s["describe"] = describe(p, s, extra)
    print()
    name = tag(p, s)
    print(write(out, name, rows, {**s, "extra": extra}, reference))
    print(f"results: {out}/{name}.md, .json, .csv; the chosen configurations' runs: clframe compare "
          f"{out}/{name}/*/eval-*")
