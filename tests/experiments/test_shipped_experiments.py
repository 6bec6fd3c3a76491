"""The shipped experiments reproduce the effects the issue asks for.

Thresholds are the issue's; the runs are the shipped configs with seed 0, unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clframe.config import compose
from clframe.data.datasets.mnist import T10K_DEFAULT
from clframe.run.runner import run


def _run(tmp_path, *overrides: str) -> dict:
    return run(compose([*overrides, "logger.progress=false"]), tmp_path / "_".join(overrides).replace("=", "-"))


def test_split_digits_naive_forgets_and_replay_remembers(tmp_path):
    naive = _run(tmp_path, "experiment=split_digits", "strategy=naive")
    replay = _run(tmp_path, "experiment=split_digits", "strategy=replay")
    assert naive["final_avg_acc"] <= 0.30
    assert replay["final_avg_acc"] >= 0.80


def test_split_digits_til_ewc_is_accurate_and_not_below_naive(tmp_path):
    naive = _run(tmp_path, "experiment=split_digits_til", "strategy=naive")
    ewc = _run(tmp_path, "experiment=split_digits_til", "strategy=ewc")
    assert ewc["final_avg_acc"] >= 0.90
    assert ewc["final_avg_acc"] >= naive["final_avg_acc"]


def test_permuted_digits_ewc_forgets_5_points_less_than_naive(tmp_path):
    naive = _run(tmp_path, "experiment=permuted_digits", "strategy=naive")
    ewc = _run(tmp_path, "experiment=permuted_digits", "strategy=ewc")
    assert ewc["avg_forgetting"] <= naive["avg_forgetting"] - 0.05


def test_stability_gap_rotated_dips_at_least_3_points_and_recovers(tmp_path):
    s = _run(tmp_path, "experiment=stability_gap_rotated")
    first = s["stability_gap_first"]
    assert first["boundary"] == 0 and first["experience"] == 0
    assert first["depth"] >= 0.03
    assert first["recovery"] is not None
    assert (tmp_path.glob("*/plots/accuracy_curves.png"))


def test_stability_gap_split_digits_replay_has_a_gap_hidden_at_boundaries(tmp_path):
    s = _run(tmp_path, "experiment=stability_gap_split_digits", "strategy=replay")
    past_final = s["final_accs"][:-1]
    assert s["min_acc"] < sum(past_final) / len(past_final) - 0.05


T10K = pytest.mark.skipif(not Path(T10K_DEFAULT).is_dir(), reason=f"real MNIST test set not at {T10K_DEFAULT}")


@pytest.mark.slow
@T10K
def test_baselines_split_mnist_keeps_the_published_ordering(tmp_path):
    # van de Ven & Tolias 2019 (Table 4, class-IL): None ~ EWC ~ SI ~ 0.20, replay methods far above; DER++ >= ER
    acc = {s: _run(tmp_path, "experiment=baselines_split_mnist", f"strategy={s}")["final_avg_acc"]
           for s in ("naive", "ewc", "si", "replay", "derpp", "er_ace", "icarl", "gdumb", "bic")}
    assert all(0.15 <= acc[s] <= 0.30 for s in ("naive", "ewc", "si")), acc
    assert all(acc[s] > 0.60 for s in ("replay", "derpp", "er_ace", "icarl", "gdumb", "bic")), acc
    assert acc["derpp"] >= acc["replay"], acc


@pytest.mark.slow
@T10K
def test_baselines_split_mnist_til_regularisers_are_accurate(tmp_path):
    acc = {s: _run(tmp_path, "experiment=baselines_split_mnist_til", f"strategy={s}")["final_avg_acc"]
           for s in ("ewc", "si", "mas", "lwf")}
    assert all(a >= 0.95 for a in acc.values()), acc


@pytest.mark.slow
@T10K
def test_online_split_mnist_ema_lifts_er_on_every_metric(tmp_path):
    # Soutif-Cormerais et al. 2023: the EMA of ER's weights (decay 0.9 here) gains final accuracy and AAA,
    # raises min-ACC and flattens the stability gap; measured on seed 0: 0.780 -> 0.801, 0.877 -> 0.879,
    # 0.495 -> 0.678, 0.301 -> 0.126
    er = _run(tmp_path, "experiment=online_split_mnist", "strategy=replay")
    ema = _run(tmp_path, "experiment=online_split_mnist", "strategy=[replay,ema]")
    assert ema["final_avg_acc"] > er["final_avg_acc"] and ema["aaa"] > er["aaa"]
    assert ema["min_acc"] > er["min_acc"] + 0.1 and ema["stability_gap_depth"] < er["stability_gap_depth"] - 0.1
