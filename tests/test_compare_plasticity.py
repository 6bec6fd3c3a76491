"""``clframe compare`` on runs with per-task plasticity rows: plasticity_comparison.png, and the per-group
series it draws (mean and min–max over seeds; dead units and effective rank averaged over layers, the
largest σ_max)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import run_main
from test_compare import PNG_MAGIC, write_run

from clframe.compare import group_runs, load_runs
from clframe.monitors.plasticity.compare import group_series, plot_plasticity_comparison

PNG = "plasticity_comparison.png"


def plasticity(acc: list[float], dead: list[tuple[float, float]], sigma: list[tuple[float, float]],
               rank: list[tuple[float, float]] | None = None, online_key: str = "online_acc",
               task_end: bool = True) -> dict[str, Any]:
    """Summary keys of a ``monitors.plasticity.enabled=true`` run with two layers: one row per task; ``acc`` is
    both the end-of-task accuracy and, shifted by -0.1, the online metric."""
    rank = rank or [(1.0, 2.0)] * len(acc)
    rows = [{"task": t, online_key: a - 0.1, "online_loss": 1.0, "plasticity": 0.5, "grad_norm": 1.0,
             "dead_fraction/fc1": d[0], "dead_fraction/fc2": d[1], "effective_rank/fc1": r[0],
             "effective_rank/fc2": r[1], "weight_norm/fc1.weight": 3.0, "sigma_max/fc1.weight": s[0],
             "sigma_max/fc2.weight": s[1]}
            for t, (a, d, s, r) in enumerate(zip(acc, dead, sigma, rank))]
    return {"plasticity": rows, **({"task_end_acc": acc} if task_end else {})}


def write_plasticity_runs(root: Path, n_tasks: dict[str, int] | None = None) -> None:
    """2 groups (naive, replay) x 2 seeds; ``n_tasks`` per strategy (default 3)."""
    for strategy in ("naive", "replay"):
        t = (n_tasks or {}).get(strategy, 3)
        for seed in (0, 1):
            acc = [0.9 - 0.1 * i - 0.2 * seed for i in range(t)]
            metrics = plasticity(acc, [(0.1 * i, 0.3 * i) for i in range(t)], [(1.0 + i, 2.0 + seed) for i in range(t)])
            write_run(root, f"{strategy}-s{seed}", seed=seed, strategies={strategy: {}}, metrics=metrics)


def test_compare_writes_the_plasticity_figure(tmp_path, capsys):
    write_plasticity_runs(tmp_path)
    code, out, _ = run_main(["compare", str(tmp_path)], capsys)
    assert code == 0
    wrote = next(line for line in out.splitlines() if line.startswith("wrote "))
    assert wrote.endswith(f"comparison.png, {tmp_path / PNG}")
    assert (tmp_path / PNG).read_bytes()[:8] == PNG_MAGIC


def test_group_series_mean_band_and_layer_reductions(tmp_path):
    write_run(tmp_path, "a", seed=0, metrics=plasticity(
        [0.9, 0.5], dead=[(0.0, 0.2), (0.4, 1.0)], sigma=[(1.0, 3.0), (5.0, 2.0)], rank=[(4.0, 2.0), (1.0, 1.0)]))
    write_run(tmp_path, "b", seed=1, metrics=plasticity(
        [0.7, 0.1], dead=[(0.2, 0.2), (0.0, 0.0)], sigma=[(2.0, 1.0), (1.0, 1.0)], rank=[(6.0, 6.0), (3.0, 1.0)]))
    (group,) = group_runs(load_runs([tmp_path])).groups
    s = group_series(group)
    assert list(s) == ["task_end_acc", "dead_fraction", "sigma_max", "effective_rank"]
    acc = s["task_end_acc"]
    assert acc.tasks.tolist() == [1, 2]
    assert acc.mean == pytest.approx([0.8, 0.3]) and acc.lo == pytest.approx([0.7, 0.1])
    assert acc.hi == pytest.approx([0.9, 0.5])
    # per run: mean over layers (dead, rank) or the largest (sigma); then over seeds
    assert s["dead_fraction"].mean == pytest.approx([(0.1 + 0.2) / 2, (0.7 + 0.0) / 2])
    assert s["dead_fraction"].hi == pytest.approx([0.2, 0.7])
    assert s["sigma_max"].mean == pytest.approx([(3.0 + 2.0) / 2, (5.0 + 1.0) / 2])
    assert s["sigma_max"].lo == pytest.approx([2.0, 1.0])
    assert s["effective_rank"].mean == pytest.approx([(3.0 + 6.0) / 2, (1.0 + 2.0) / 2])
    assert group_series(group, metric="online")["online_acc"].mean == pytest.approx([0.7, 0.2])


def test_runs_without_plasticity_rows_get_no_figure(tmp_path, capsys):
    write_run(tmp_path, "a", seed=0)
    write_run(tmp_path, "b", seed=1, strategies={"replay": {}}, metrics={"plasticity": []})
    cmp = group_runs(load_runs([tmp_path]))
    assert [group_series(g) for g in cmp.groups] == [None, None]
    assert plot_plasticity_comparison(cmp, tmp_path / PNG) is None
    code, out, _ = run_main(["compare", str(tmp_path)], capsys)
    assert code == 0 and "comparison.png" in out
    assert PNG not in out and not (tmp_path / PNG).exists()


def test_online_error_rows_for_regression(tmp_path, capsys):
    for seed, acc in enumerate(([0.5, 0.3, 0.2], [0.7, 0.5, 0.4])):
        # a regression run's accuracy matrix holds negative squared errors: the online error is drawn instead
        metrics = plasticity(acc, [(0.0, 0.0)] * 3, [(1.0, 1.0)] * 3, online_key="online_error")
        write_run(tmp_path, f"s{seed}", seed=seed, metrics=metrics)
    (group,) = group_runs(load_runs([tmp_path])).groups
    s = group_series(group)
    assert next(iter(s)) == "online_error"
    assert s["online_error"].mean == pytest.approx([0.5, 0.3, 0.2])
    assert s["online_error"].lo == pytest.approx([0.4, 0.2, 0.1])
    code, _, _ = run_main(["compare", str(tmp_path)], capsys)
    assert code == 0 and (tmp_path / PNG).read_bytes()[:8] == PNG_MAGIC


def test_groups_and_runs_of_differing_lengths(tmp_path):
    write_plasticity_runs(tmp_path, n_tasks={"naive": 3, "replay": 5})
    # a third naive seed stopped after one task, without task_end_acc: the group falls back to online accuracy
    write_run(tmp_path, "naive-s2", seed=2, metrics=plasticity([0.2], [(0.0, 0.0)], [(1.0, 1.0)], task_end=False))
    cmp = group_runs(load_runs([tmp_path]))
    naive, replay = (group_series(g) for g in cmp.groups)
    assert replay["task_end_acc"].tasks.tolist() == [1, 2, 3, 4, 5]
    online = naive["online_acc"]
    assert online.tasks.tolist() == [1, 2, 3]
    assert online.mean == pytest.approx([np.mean([0.8, 0.6, 0.1]), 0.6, 0.5])  # task 1 over 3 runs, then 2
    assert online.lo == pytest.approx([0.1, 0.5, 0.4])
    assert plot_plasticity_comparison(cmp, tmp_path / PNG) == tmp_path / PNG


def test_the_plasticity_metric_option_switches_the_first_panel(tmp_path, capsys, monkeypatch):
    import clframe.monitors.plasticity.compare as cp

    write_plasticity_runs(tmp_path)
    seen = []
    real = cp.group_series
    monkeypatch.setattr(cp, "group_series", lambda g, metric="task_end": seen.append(metric) or real(g, metric))
    code, _, _ = run_main(["compare", str(tmp_path), "--plasticity-metric", "online"], capsys)
    assert code == 0 and seen and set(seen) == {"online"}
    code, _, err = run_main(["compare", str(tmp_path), "--plasticity-metric", "last"], capsys)
    assert code == 2 and "invalid choice: 'last'" in err
