"""``clframe compare`` on runs made with ``monitors.online.enabled=true``: online_comparison.png, the per-group
series it draws (mean and min–max over seeds, truncated to the shortest run, smoothing, experience ends), and the
``online.*`` summary metrics in the table."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_compare import PNG_MAGIC, read_csv, write_run

from clframe.compare import compare, group_runs, load_runs
from clframe.monitors.online.compare import PNG as ONLINE_PNG
from clframe.monitors.online.compare import group_online, moving_average, plot_online_comparison

STEPS = [10, 20, 30, 40]
EXPERIENCES = [0, 0, 1, 1]
# group -> seed -> (online accuracy offset, gamma or None: a head without diagnostics)
RUNS = {"naive": {0: (0.0, None), 1: (0.2, None)}, "replay": {0: (0.1, 0.9), 1: (0.3, 0.7)}}


def write_online(d: Path, offset: float, gamma: float | None, n_windows: int = len(STEPS)) -> list[dict[str, Any]]:
    """online.csv of a classification run: accuracy ``offset + 0.1 * window``; ``gamma`` column when given."""
    rows = [{"step": s, "experience": e, "n": 64, "online_acc": offset + 0.1 * i, "online_loglik": -1.0 - offset,
             "ece": 0.05 * (i + 1), **({"gamma": gamma + 0.01 * i} if gamma is not None else {})}
            for i, (s, e) in enumerate(zip(STEPS[:n_windows], EXPERIENCES))]
    with (d / "online.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def online_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``online`` key of summary.json for these rows (as ``OnlineMonitor.summary`` lays it out)."""
    out: dict[str, Any] = {"n": 64 * len(rows), "online_acc": statistics.fmean(r["online_acc"] for r in rows),
                           "online_loglik": rows[0]["online_loglik"], "ece": 0.1, "window": 10,
                           "ece_windowed_mean": statistics.fmean(r["ece"] for r in rows), "per_experience": []}
    if "gamma" in rows[0]:
        out["gamma"] = rows[-1]["gamma"]
        out["gamma_trajectory"] = {"step": [r["step"] for r in rows], "value": [r["gamma"] for r in rows]}
    return out


def write_online_runs(root: Path, short: tuple[str, int] | None = None) -> None:
    """2 groups (naive, replay) x 2 seeds with online.csv; the ``short`` (strategy, seed) run has 3 windows."""
    for strategy, seeds in RUNS.items():
        for seed, (offset, gamma) in seeds.items():
            d = write_run(root, f"{strategy}-s{seed}", seed=seed, strategies={strategy: {}})
            rows = write_online(d, offset, gamma, 3 if short == (strategy, seed) else len(STEPS))
            summary_path = d / "summary.json"
            summary = json.loads(summary_path.read_text())
            summary_path.write_text(json.dumps(summary | {"online": online_summary(rows)}))


def test_compare_writes_the_online_figure_and_online_metrics(tmp_path, capsys):
    write_online_runs(tmp_path)
    cmp = compare([tmp_path], metrics=["online.online_acc,online.ece_windowed_mean", "online.gamma"])
    out = capsys.readouterr().out
    wrote = next(line for line in out.splitlines() if line.startswith("wrote "))
    assert wrote.endswith(str(tmp_path / ONLINE_PNG))
    assert (tmp_path / ONLINE_PNG).read_bytes()[:8] == PNG_MAGIC
    assert [g.label for g in cmp.groups] == ["strategies=naive", "strategies=replay"]

    table = {r["group"]: r for r in read_csv(tmp_path / "comparison.csv")}
    assert list(table["strategies=naive"])[2:] == [
        "online.online_acc_mean", "online.online_acc_std", "online.ece_windowed_mean_mean",
        "online.ece_windowed_mean_std", "online.gamma_mean", "online.gamma_std"]
    for strategy, seeds in RUNS.items():
        r = table[f"strategies={strategy}"]
        accs = [off + 0.15 for off, _ in seeds.values()]  # mean over windows 0..3 of 0.1 * i is 0.15
        assert float(r["online.online_acc_mean"]) == pytest.approx(statistics.mean(accs))
        assert float(r["online.online_acc_std"]) == pytest.approx(statistics.stdev(accs))
        assert float(r["online.ece_windowed_mean_mean"]) == pytest.approx(0.125)
    assert float(table["strategies=replay"]["online.gamma_mean"]) == pytest.approx((0.93 + 0.73) / 2)
    assert table["strategies=naive"]["online.gamma_mean"] == ""  # a head without diagnostics


def test_group_online_mean_band_truncation_and_experience_ends(tmp_path):
    write_online_runs(tmp_path, short=("replay", 1))
    naive, replay = group_runs(load_runs([tmp_path])).groups
    s = group_online(naive)
    assert s is not None and s.n_runs == 2 and s.ends == [20]
    np.testing.assert_allclose(s.steps, STEPS)
    np.testing.assert_allclose(s.bands["online_acc"].mean, [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(s.bands["online_acc"].lo, [0.0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(s.bands["online_acc"].hi, [0.2, 0.3, 0.4, 0.5])
    assert "gamma" not in s.bands
    r = group_online(replay)
    assert r is not None
    np.testing.assert_allclose(r.steps, STEPS[:3])  # truncated to the shortest run
    np.testing.assert_allclose(r.bands["gamma"].mean, [0.8, 0.81, 0.82])
    smoothed = group_online(naive, smooth=2)
    assert smoothed is not None
    np.testing.assert_allclose(smoothed.bands["online_acc"].mean, [0.1, 0.15, 0.25, 0.35])
    np.testing.assert_allclose(moving_average(np.array([1.0, np.nan, 3.0, 5.0]), 2), [1.0, 1.0, 3.0, 4.0])


def test_no_online_csv_no_figure(tmp_path, capsys):
    write_run(tmp_path, "a", seed=0)
    cmp = compare([tmp_path])
    assert plot_online_comparison(cmp, tmp_path / ONLINE_PNG) is None
    assert not (tmp_path / ONLINE_PNG).exists()
    assert "online_comparison" not in capsys.readouterr().out
