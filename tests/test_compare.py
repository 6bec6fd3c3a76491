"""``clframe compare`` on hand-written run directories: grouping by config difference, mean ± std over
seeds, comparison.csv / comparison.png, the not-comparable warning, metric selection."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import run_main

from clframe.compare import differing_keys, group_runs, load_runs, resolve_metrics
from clframe.compare.curves import read_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# (step, experience, eval_experience, acc, kind)
CURVE = [
    (0, -1, 0, 0.1, "continual"),
    (10, 0, 0, 0.5, "continual"),
    (20, 0, 0, 0.9, "boundary"),  # boundary rows: left out when there are continual ones
    (20, 0, 1, 0.0, "boundary"),
    (20, 0, 0, 0.8, "continual"),
    (30, 1, 0, 0.4, "continual"),
    (30, 1, 1, 0.6, "continual"),
]


def write_run(root: Path, name: str, *, seed: int = 0, strategies: dict[str, Any] | None = None,
              scenario: dict[str, Any] | None = None, experiment: str = "exp", train: dict[str, Any] | None = None,
              metrics: dict[str, Any] | None = None, curve: list[tuple] | None = None, kind: bool = True) -> Path:
    """A fake run directory: config.yaml (resolved, seed-derived keys included), summary.json, metrics.csv."""
    strategies = {"naive": {}} if strategies is None else strategies
    strategies = {k: {**v, "seed": seed} if k == "replay" else v for k, v in strategies.items()}
    config = {
        "seed": seed,
        "experiment_name": experiment,
        "train": {"epochs": 1, "lr": 0.05, **(train or {})},
        "logger": {"progress": seed % 2 == 0, "wandb": False},  # display-only: ignored
        "scenario": {"name": "split", "n_experiences": 2, "seed": seed, "data_root": f"/data/{name}",
                     **(scenario or {})},
        "backbone": {"name": "mlp", "hidden": [16]},
        "strategies": strategies,
    }
    summary = {"experiment_name": experiment, "strategies": list(strategies), "seed": seed,
               "scenario": "fake", "acc_matrix": [[0.5]], "steps": 30,
               "final_avg_acc": 0.5, "avg_forgetting": 0.1, "bwt": -0.1, **(metrics or {})}
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (d / "summary.json").write_text(json.dumps(summary))
    rows = CURVE if curve is None else curve
    header = "step,experience,eval_experience,acc,loss" + (",kind" if kind else "")
    lines = [",".join(map(str, r[:4] + (1.0,) + (r[4:] if kind else ()))) for r in rows]
    (d / "metrics.csv").write_text("\n".join([header, *lines]) + "\n")
    return d




def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def table_rows(out: str) -> dict[str, list[str]]:
    """Table rows keyed by group label (labels here hold no spaces unless they have several keys)."""
    return {line.split("  ")[1].strip(): line.split() for line in out.splitlines()
            if line.strip().startswith(("strategies=", "train.", "scenario."))}


# -- grouping ------------------------------------------------------------------------------------

def test_runs_differing_only_by_seed_form_one_group(tmp_path):
    for s in range(3):
        write_run(tmp_path, f"{s}-replay-s{s}", seed=s, strategies={"replay": {"mem_size": 200}})
    runs = load_runs([tmp_path])
    assert len(runs) == 3
    # seed, scenario.seed / strategies.replay.seed (= the seed), scenario.data_root (a path), logger.progress
    assert differing_keys(runs) == []
    cmp = group_runs(runs)
    assert [(g.label, len(g.runs)) for g in cmp.groups] == [("strategies=replay", 3)]
    assert cmp.comparable


def test_runs_differing_by_strategy_form_one_group_per_strategy(tmp_path):
    for i, (strategy, seed) in enumerate([("naive", 0), ("naive", 1), ("replay", 0), ("replay", 1), ("ewc", 0)]):
        params = {} if strategy == "naive" else {"mem_size": 200} if strategy == "replay" else {"ewc_lambda": 100}
        write_run(tmp_path, f"{i}-{strategy}-s{seed}", seed=seed, strategies={strategy: params})
    write_run(tmp_path, "5-both-s0", strategies={"replay": {"mem_size": 200}, "ewc": {"ewc_lambda": 100}})
    cmp = group_runs(load_runs([tmp_path]))
    assert cmp.keys == ["strategies"]  # a strategy's own parameters are not compared with runs without it
    assert [(g.label, len(g.runs)) for g in cmp.groups] == [
        ("strategies=naive", 2), ("strategies=replay", 2), ("strategies=ewc", 1), ("strategies=replay+ewc", 1)]


def test_a_components_parameters_are_compared_only_among_runs_of_that_component(tmp_path):
    heads = [({"name": "kalman", "gamma": 0.999}, 0), ({"name": "kalman", "gamma": 0.999}, 1),
             ({"name": "linear"}, 0), ({"name": "linear"}, 1), ({"name": "kalman", "gamma": 0.99}, 0)]
    for i, (head, seed) in enumerate(heads):
        d = write_run(tmp_path, f"{i}-s{seed}", seed=seed)
        config = yaml.safe_load((d / "config.yaml").read_text())
        config["head"] = {**head, "seed": seed} if head["name"] == "kalman" else head  # seed-derived: ignored
        (d / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmp = group_runs(load_runs([tmp_path]))
    assert cmp.keys == ["head.name", "head.gamma"]  # the linear runs' missing gamma is not a difference
    assert [(g.label, len(g.runs)) for g in cmp.groups] == [
        ("head.name=kalman, head.gamma=0.999", 2), ("head.name=linear", 2), ("head.name=kalman, head.gamma=0.99", 1)]


def test_a_differing_strategy_parameter_is_in_the_label(tmp_path):
    write_run(tmp_path, "0-naive-s0", strategies={"naive": {}})
    for i, (lam, seed) in enumerate([(100, 0), (300, 0), (300, 1)], start=1):
        write_run(tmp_path, f"{i}-ewc-s{seed}", seed=seed, strategies={"ewc": {"ewc_lambda": lam, "mode": "sep"}})
    write_run(tmp_path, "4-ewc-lr", strategies={"ewc": {"ewc_lambda": 100, "mode": "sep"}}, train={"lr": 0.1})
    cmp = group_runs(load_runs([tmp_path]))
    assert cmp.keys == ["strategies", "train.lr", "strategies.ewc.ewc_lambda"]
    assert [(g.label, len(g.runs)) for g in cmp.groups] == [
        ("strategies=naive, train.lr=0.05", 1),
        ("strategies=ewc, train.lr=0.05, strategies.ewc.ewc_lambda=100", 1),
        ("strategies=ewc, train.lr=0.05, strategies.ewc.ewc_lambda=300", 2),
        ("strategies=ewc, train.lr=0.1, strategies.ewc.ewc_lambda=100", 1),
    ]


def test_seed_derived_keys_are_ignored_but_a_coincidence_is_not(tmp_path):
    # train.shuffle_seed is the run's seed in every run: derived; train.tag equals it in one run only: a real difference
    write_run(tmp_path, "a", seed=0, train={"shuffle_seed": 0, "tag": 0})
    write_run(tmp_path, "b", seed=1, train={"shuffle_seed": 1, "tag": 7})
    write_run(tmp_path, "c", seed=2, train={"shuffle_seed": 2, "tag": 7})
    cmp = group_runs(load_runs([tmp_path]))
    assert cmp.keys == ["train.tag"]
    assert [(g.label, len(g.runs)) for g in cmp.groups] == [("train.tag=0", 1), ("train.tag=7", 2)]


# -- numbers and files ---------------------------------------------------------------------------

def test_mean_std_table_and_csv(tmp_path, capsys):
    accs = {"naive": [0.2, 0.4], "replay": [0.5, 0.7, 0.6]}
    for strategy, vals in accs.items():
        for seed, acc in enumerate(vals):
            write_run(tmp_path, f"{strategy}-s{seed}", seed=seed, strategies={strategy: {}},
                      metrics={"final_avg_acc": acc, "bwt": -acc / 2})
    code, out, err = run_main(["compare", str(tmp_path)], capsys)
    assert code == 0 and "warning" not in err
    assert "experiment exp: 5 runs in 2 groups" in out
    rows = table_rows(out)
    assert rows["strategies=replay"][1:5] == ["3", "0.600", "±", "0.100"]
    assert rows["strategies=naive"][1:5] == ["2", "0.300", "±", "0.141"]
    assert "min_acc" not in out  # optional metrics only when the summaries have them

    table = read_csv(tmp_path / "comparison.csv")
    assert list(table[0]) == ["group", "n_seeds", "final_avg_acc_mean", "final_avg_acc_std", "avg_forgetting_mean",
                              "avg_forgetting_std", "bwt_mean", "bwt_std"]
    by_group = {r["group"]: r for r in table}
    assert by_group["strategies=naive"]["n_seeds"] == "2"
    for strategy, vals in accs.items():
        r = by_group[f"strategies={strategy}"]
        assert float(r["final_avg_acc_mean"]) == pytest.approx(statistics.mean(vals))
        assert float(r["final_avg_acc_std"]) == pytest.approx(statistics.stdev(vals))
        assert float(r["bwt_mean"]) == pytest.approx(-statistics.mean(vals) / 2)
        assert float(r["avg_forgetting_std"]) == pytest.approx(0.0)
    assert (tmp_path / "comparison.png").read_bytes()[:8] == PNG_MAGIC


def test_one_seed_has_no_std_and_null_metrics_are_absent(tmp_path, capsys):
    write_run(tmp_path, "a", seed=0, metrics={"min_acc": 0.3, "wc_acc": None})
    write_run(tmp_path, "b", seed=1, metrics={"min_acc": None, "wc_acc": None})
    write_run(tmp_path, "c", seed=0, strategies={"replay": {}}, metrics={"min_acc": 0.8})
    code, out, _ = run_main(["compare", str(tmp_path)], capsys)
    assert code == 0
    rows = table_rows(out)
    # min_acc is recorded (in some runs): a default column; wc_acc never has a value: not shown
    header = next(line.split() for line in out.splitlines() if line.split()[:2] == ["group", "seeds"])
    assert header[2:] == ["final_avg_acc", "avg_forgetting", "bwt", "min_acc"]
    assert rows["strategies=naive"][-3:] == ["0.000", "0.300", "(n=1)"]  # bwt ± std; min_acc of one run
    assert rows["strategies=replay"][1:3] == ["1", "0.500"]
    r = {row["group"]: row for row in read_csv(tmp_path / "comparison.csv")}
    assert r["strategies=replay"]["final_avg_acc_std"] == ""  # undefined for one seed
    assert float(r["strategies=naive"]["min_acc_mean"]) == pytest.approx(0.3)
    assert r["strategies=naive"]["min_acc_std"] == ""


def test_curve_uses_continual_rows_when_there_is_a_kind_column(tmp_path):
    d = write_run(tmp_path, "a")
    steps, values, source = read_curve(d / "metrics.csv")
    assert source == "continual"
    assert steps == [0, 10, 20, 30]
    assert values == pytest.approx([0.1, 0.5, 0.8, 0.5])  # step 30: mean over experiences 0 and 1


def test_curve_without_kind_column_uses_every_row(tmp_path):
    curve = [(0, -1, 0, 0.1), (20, 0, 0, 0.9), (20, 0, 0, 0.7), (20, 0, 1, 0.2), (30, 1, 0, 0.3)]
    d = write_run(tmp_path, "a", curve=curve, kind=False)
    steps, values, source = read_curve(d / "metrics.csv")
    assert source == "all"
    assert steps == [0, 20, 30]
    assert values == pytest.approx([0.1, (0.8 + 0.2) / 2, 0.3])  # repeats of one experience averaged first
    only_boundary = [r[:4] + ("boundary",) for r in curve]
    d = write_run(tmp_path, "b", curve=only_boundary)
    assert read_curve(d / "metrics.csv")[1:] == (pytest.approx([0.1, 0.5, 0.3]), "all")


def test_plot_averages_curves_over_seeds(tmp_path, capsys):
    write_run(tmp_path, "a", seed=0, curve=[(0, -1, 0, 0.2, "continual"), (10, 0, 0, 0.4, "continual")])
    write_run(tmp_path, "b", seed=1, curve=[(0, -1, 0, 0.4, "continual"), (10, 0, 0, 0.8, "continual")])
    write_run(tmp_path, "c", seed=0, strategies={"replay": {}}, kind=False)
    from clframe.compare.curves import group_curve

    cmp = group_runs(load_runs([tmp_path]))
    steps, mean, std, sources = group_curve(cmp.groups[0])
    assert steps == [0, 10] and mean == pytest.approx([0.3, 0.6])
    assert std == pytest.approx([statistics.stdev([0.2, 0.4]), statistics.stdev([0.4, 0.8])])
    assert sources == {"continual"} and group_curve(cmp.groups[1])[3] == {"all"}
    out = tmp_path / "report"
    code, stdout, _ = run_main(["compare", str(tmp_path), "--out", str(out)], capsys)
    assert code == 0 and "comparison.png" in stdout
    assert (out / "comparison.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "comparison.csv").is_file() and not (tmp_path / "comparison.csv").exists()


# -- comparability, metric choice, errors ---------------------------------------------------------

def test_runs_in_different_scenarios_are_flagged(tmp_path, capsys):
    for n in (2, 5):
        for strategy in ("naive", "replay"):
            write_run(tmp_path, f"{strategy}-n{n}", strategies={strategy: {}}, scenario={"n_experiences": n})
    write_run(tmp_path, "other", experiment="exp2", scenario={"n_experiences": 2})
    code, out, err = run_main(["compare", str(tmp_path)], capsys)
    assert code == 0
    assert "warning: runs differ in their scenario, so their results are NOT comparable" in err
    assert "scenario.n_experiences: 2, 5" in err
    assert "experiment_name: exp, exp2" in err
    assert "[experiment_name=exp, scenario.n_experiences=5] strategies=naive, experiment_name=exp, " \
           "scenario.n_experiences=5; strategies=replay, experiment_name=exp, scenario.n_experiences=5" in err
    assert "NOT COMPARABLE (scenarios differ in experiment_name, scenario.n_experiences)" in out
    assert len(read_csv(tmp_path / "comparison.csv")) == 5  # the table is still produced


def test_same_scenario_is_comparable(tmp_path, capsys):
    write_run(tmp_path, "a", strategies={"naive": {}})
    write_run(tmp_path, "b", strategies={"replay": {}})
    code, out, err = run_main(["compare", str(tmp_path / "a"), str(tmp_path / "b")], capsys)
    assert code == 0 and "NOT" not in out and err == ""
    assert (tmp_path / "a" / "comparison.csv").is_file()  # default --out: the first given directory


def test_the_cumulative_upper_bound_is_comparable_and_grouped_by_its_strategy(tmp_path, capsys):
    # scenario.cumulative changes only what trains (the eval data are the same): the upper bound's row
    # belongs in the table, labelled by its strategy alone, as an experiment sets it with strategy=cumulative
    for strategy in ("naive", "cumulative"):
        write_run(tmp_path, strategy, strategies={strategy: {}}, scenario={"cumulative": strategy == "cumulative"})
    code, out, err = run_main(["compare", str(tmp_path)], capsys)
    assert code == 0 and "NOT" not in out and err == ""
    assert sorted(r["group"] for r in read_csv(tmp_path / "comparison.csv")) == ["strategies=cumulative",
                                                                          "strategies=naive"]
    # swept within one strategy, it tells the groups apart, still comparable
    for flag in (False, True):
        write_run(tmp_path / "sweep", f"replay-{flag}", strategies={"replay": {}}, scenario={"cumulative": flag})
    assert [g.label for g in group_runs(load_runs([tmp_path / "sweep"])).groups] == [
        "scenario.cumulative=false", "scenario.cumulative=true"]


def test_metric_selection(tmp_path, capsys):
    write_run(tmp_path, "a", seed=0, metrics={"wc_acc": 0.2, "train_samples_per_s": 1000.0})
    write_run(tmp_path, "b", seed=1, metrics={"wc_acc": 0.4, "train_samples_per_s": 3000.0})
    runs = load_runs([tmp_path])
    assert resolve_metrics(runs) == ["final_avg_acc", "avg_forgetting", "bwt", "wc_acc"]
    code, out, _ = run_main(["compare", str(tmp_path), "--metric", "wc_acc,steps", "--metric",
                             "train_samples_per_s"], capsys)
    assert code == 0
    header = next(line.split() for line in out.splitlines() if line.split()[:2] == ["group", "seeds"])
    assert header[2:] == ["wc_acc", "steps", "train_samples_per_s"]
    assert table_rows(out)["strategies=naive"][2:] == ["0.300", "±", "0.141", "30.000", "±", "0.000", "2000",
                                                       "±", "1414"]
    assert list(read_csv(tmp_path / "comparison.csv")[0])[2:] == [
        "wc_acc_mean", "wc_acc_std", "steps_mean", "steps_std", "train_samples_per_s_mean", "train_samples_per_s_std"]

    code, _, err = run_main(["compare", str(tmp_path), "--metric", "final_acc"], capsys)
    assert code == 2
    assert err.startswith("error: Unknown metric 'final_acc'. Did you mean 'final_avg_acc'?")


def test_nothing_found_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, err = run_main(["compare", str(tmp_path / "empty"), str(tmp_path / "missing")], capsys)
    assert code == 2
    assert err.startswith("error: no summary.json found under") and str(tmp_path / "missing") in err
    assert not (tmp_path / "empty" / "comparison.csv").exists()


def test_run_dir_without_config_yaml_groups_by_summary(tmp_path):
    for name, strategy, seed in [("a", "naive", 0), ("b", "naive", 1), ("c", "replay", 0)]:
        (write_run(tmp_path, name, seed=seed, strategies={strategy: {}}) / "config.yaml").unlink()
    cmp = group_runs(load_runs([tmp_path]))
    assert [(g.label, len(g.runs)) for g in cmp.groups] == [("strategies=naive", 2), ("strategies=replay", 1)]
