"""Curve metrics (min-ACC, WC-ACC, WF/WP, LCA, stability gap) on hand-made curves with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clframe.evaluation.curve import Curve
from clframe.evaluation.curve_metrics import (
    anytime_acc,
    curve_summary,
    learning_curve_area,
    min_acc,
    stability_gap,
    steps_to_acc,
    wc_acc,
    windowed_forgetting,
    windowed_plasticity,
)

N = float("nan")


def _two_exp_dip(on_all: bool = False) -> Curve:
    """Exp 0 learned to 0.9 by step 3; after the switch it dips to 0.6 and is back at 0.9 at the 4th evaluation."""
    e1_before = [0.05, 0.1, 0.1, 0.15] if on_all else [N, N, N, N]
    return Curve(
        steps=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        experience=[-1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1],
        acc=np.array([[0.1, 0.5, 0.8, 0.9, 0.75, 0.6, 0.7, 0.9, 0.9, 0.9, 0.9],
                      [*e1_before, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95]]).T,
        boundaries=[3, 10],
    )


def _after_switch(after: list[float], base: float = 0.9, e1: float = 0.5) -> Curve:
    """Exp 0 at ``base`` at its boundary (step 2), then the ``after`` values while exp 1 is trained."""
    n = len(after)
    return Curve(
        steps=list(range(3 + n)),
        experience=[-1, 0, 0] + [1] * n,
        acc=np.array([[0.1, 0.5, base, *after], [N, N, N, *[e1] * n]]).T,
        boundaries=[2, 2 + n],
    )


def _plain(x):
    """Fail on anything that is not plain JSON-able Python (numpy scalars included)."""
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in x.items())
    if isinstance(x, list):
        return all(_plain(v) for v in x)
    return x is None or type(x) in (float, int, bool, str)


# -- the dip curve -----------------------------------------------------------


def test_dip_depth_and_recovery():
    gap = stability_gap(_two_exp_dip())
    assert len(gap) == 1
    g = gap[0]
    assert (g["boundary"], g["experience"]) == (0, 0)
    assert g["base"] == pytest.approx(0.9)
    assert g["min"] == pytest.approx(0.6)
    assert g["depth"] == pytest.approx(0.3)
    assert g["recovery"] == 4


def test_dip_anytime_accuracy_averages_the_seen_experiences_at_every_evaluation():
    c = _two_exp_dip(on_all=True)
    # experience 0's 3 evaluations see exp 0 only (exp 1's untrained 0.1 is not counted); exp 1's 7 see both
    seen = [0.5, 0.8, 0.9] + [(a + b) / 2 for a, b in zip([0.75, 0.6, 0.7, 0.9, 0.9, 0.9, 0.9],
                                                          [0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95])]
    assert anytime_acc(c) == pytest.approx(sum(seen) / len(seen))
    assert anytime_acc(c) < float(np.mean([0.9, 0.95]))  # below the final accuracy: the dip counts
    assert curve_summary(c)["aaa"] == anytime_acc(c)


def test_dip_min_acc_and_wc_acc():
    c = _two_exp_dip()
    assert min_acc(c) == pytest.approx(0.6)
    # T = 2: 1/2 * final acc of exp 1 (0.95) + 1/2 * min-ACC (0.6)
    assert wc_acc(c) == pytest.approx(0.5 * 0.95 + 0.5 * 0.6)


def test_dip_windowed_forgetting_small_vs_large_window():
    c = _two_exp_dip()  # exp 0 from its boundary: 0.9, 0.75, 0.6, 0.7, 0.9, ...
    assert windowed_forgetting(c, 1) == 0.0  # no pair fits in a window of one evaluation
    assert windowed_forgetting(c, 2) == pytest.approx(0.15)  # consecutive evaluations only
    assert windowed_forgetting(c, 3) == pytest.approx(0.3)
    assert windowed_forgetting(c, 100) == pytest.approx(0.3)


def test_dip_windowed_plasticity():
    c = _two_exp_dip()
    # exp 0 learning series (first eval .. its boundary): 0.1, 0.5, 0.8, 0.9
    # exp 1 learning series (boundary of exp 0 .. its boundary): NaN, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95
    assert windowed_plasticity(c, 2) == pytest.approx((0.4 + 0.2) / 2)
    assert windowed_plasticity(c, 3) == pytest.approx((0.7 + 0.4) / 2)
    assert windowed_plasticity(c, 10) == pytest.approx((0.8 + 0.65) / 2)


def test_windowed_plasticity_ignores_drops_and_forgetting_ignores_rises():
    c = _two_exp_dip()
    # the recovery of exp 0 after the switch (0.6 -> 0.9) is not in any learning series
    assert windowed_plasticity(c, 100) == pytest.approx((0.8 + 0.65) / 2)
    rising = _after_switch([0.92, 0.95, 0.97])
    assert windowed_forgetting(rising, 10) == 0.0


def test_dip_lca():
    c = _two_exp_dip()
    # beta = 2: exp 0 -> 0.1, 0.5, 0.8; exp 1 (NaN at exp 0's boundary skipped) -> 0.3, 0.5, 0.7
    assert learning_curve_area(c, beta=2) == pytest.approx((0.1 + 0.5 + 0.8 + 0.3 + 0.5 + 0.7) / 6)
    # beta = 10: exp 0 has 4 values padded with 0.9; exp 1 has 7 values padded with 0.95
    z0 = [0.1, 0.5, 0.8] + [0.9] * 8
    z1 = [0.3, 0.5, 0.7, 0.8, 0.85, 0.9] + [0.95] * 5
    assert learning_curve_area(c) == pytest.approx(np.mean(z0 + z1))


# -- NaN handling ------------------------------------------------------------


def test_seen_and_all_agree_on_past_experience_metrics():
    seen, every = _two_exp_dip(), _two_exp_dip(on_all=True)
    assert min_acc(seen) == min_acc(every)
    assert wc_acc(seen) == wc_acc(every)
    for w in (2, 3, 10):
        assert windowed_forgetting(seen, w) == windowed_forgetting(every, w)
    assert stability_gap(seen) == stability_gap(every)


def test_lca_and_wp_use_the_pre_training_value_when_it_was_evaluated():
    every = _two_exp_dip(on_all=True)
    # with monitors.continual.on=all, exp 1 is evaluated at exp 0's boundary (0.15): Z_1 = 0.15, 0.3, 0.5
    assert learning_curve_area(every, beta=2) == pytest.approx((0.1 + 0.5 + 0.8 + 0.15 + 0.3 + 0.5) / 6)
    assert windowed_plasticity(every, 10) == pytest.approx((0.8 + 0.8) / 2)
    # the evaluations of exp 1 before exp 0's boundary are not part of its learning series
    assert windowed_plasticity(every, 100) == pytest.approx((0.8 + 0.8) / 2)


def test_nan_inside_a_series_is_skipped():
    c = _after_switch([0.7, N, 0.6, 0.95])
    assert min_acc(c) == pytest.approx(0.6)
    g = stability_gap(c)[0]
    assert g["min"] == pytest.approx(0.6) and g["recovery"] == 4  # positions still count the NaN evaluation
    # exp 0 from its boundary: 0.9, 0.7, NaN, 0.6, 0.95; windows count evaluations, the NaN one included
    assert windowed_forgetting(c, 2) == pytest.approx(0.2)
    assert windowed_forgetting(c, 3) == pytest.approx(0.2)  # 0.9 -> 0.6 is 3 evaluations apart
    assert windowed_forgetting(c, 4) == pytest.approx(0.3)


# -- one experience / nothing trained -----------------------------------------


def test_single_experience():
    c = Curve(steps=[0, 1, 2, 3], experience=[-1, 0, 0, 0], acc=[[0.1], [0.4], [0.7], [0.8]], boundaries=[3])
    assert min_acc(c) is None
    assert windowed_forgetting(c, 10) is None
    assert wc_acc(c) == pytest.approx(0.8)
    assert stability_gap(c) == []
    assert windowed_plasticity(c, 2) == pytest.approx(0.3)
    assert windowed_plasticity(c, 10) == pytest.approx(0.7)
    s = curve_summary(c)
    assert s["stability_gap_depth"] is None and s["stability_gap_first"] is None
    assert s["min_acc"] is None and s["wf_10"] is None and s["wf_100"] is None
    assert s["wc_acc"] == pytest.approx(0.8)


def test_single_experience_of_a_longer_stream_with_seen_evaluation():
    # stopped after the first of three experiences: later columns are all NaN
    c = Curve(steps=[0, 2, 4], experience=[-1, 0, 0], acc=[[0.1, N, N], [0.5, N, N], [0.9, N, N]], boundaries=[4])
    assert wc_acc(c) == pytest.approx(0.9)
    assert min_acc(c) is None
    assert learning_curve_area(c, beta=1) == pytest.approx(0.3)


def test_nothing_trained():
    c = Curve(steps=[0], experience=[-1], acc=[[0.1, 0.1]], boundaries=np.array([], dtype=int))
    s = curve_summary(c)
    assert all(s[k] is None for k in ("min_acc", "wc_acc", "wf_10", "wp_100", "lca_10", "stability_gap_depth"))
    assert s["stability_gap"] == []


def test_steps_to_acc_counts_from_each_experience_start_and_only_while_it_trains():
    c = _two_exp_dip()
    # exp 0 reaches 0.9 at step 3 (its start is 0); exp 1 reaches 0.9 at step 9, 6 steps after its start at 3
    assert steps_to_acc(c, 0.9) == [3, 6]
    assert steps_to_acc(c, 0.95) == [None, 7]
    assert steps_to_acc(c, 0.5) == [1, 2]  # exp 1: 0.5 at step 5
    assert curve_summary(c)["steps_to_acc"]["0.95"] == [None, 7]


# -- stability gap -----------------------------------------------------------


def test_no_dip_has_zero_depth_and_recovery():
    g = stability_gap(_after_switch([0.9, 0.95, 0.97]))[0]
    assert g["depth"] == 0.0 and g["recovery"] == 0
    assert g["min"] == pytest.approx(0.9)


def test_dip_within_one_point_counts_as_no_dip():
    g = stability_gap(_after_switch([0.895, 0.9, 0.92]))[0]
    assert g["depth"] == pytest.approx(0.005)
    assert g["recovery"] == 0


def test_recovery_exactly_one_point_below_base():
    g = stability_gap(_after_switch([0.6, 0.89, 0.9]))[0]
    assert g["recovery"] == 2


def test_never_recovers():
    g = stability_gap(_after_switch([0.6, 0.7, 0.8, 0.85]))[0]
    assert g["depth"] == pytest.approx(0.3)
    assert g["recovery"] is None


def test_window_limits_depth_but_not_recovery_search():
    c = _after_switch([0.85, 0.85, 0.5, 0.7, 0.9])
    g2 = stability_gap(c, window=2)[0]
    assert g2["min"] == pytest.approx(0.85) and g2["depth"] == pytest.approx(0.05)
    assert g2["recovery"] == 5  # sought over all of exp 1's evaluations, beyond the window
    g3 = stability_gap(c, window=3)[0]
    assert g3["min"] == pytest.approx(0.5) and g3["depth"] == pytest.approx(0.4)
    assert g3["recovery"] == 5


def test_recovery_only_counts_the_next_experience():
    # three experiences; exp 0 recovers only while exp 2 is trained -> no recovery at boundary 0
    c = Curve(
        steps=[0, 1, 2, 3, 4, 5, 6],
        experience=[-1, 0, 1, 1, 2, 2, 2],
        acc=np.array([[0.2, 0.9, 0.6, 0.7, 0.85, 0.9, 0.9],
                      [N, N, 0.5, 0.8, 0.5, 0.7, 0.8],
                      [N, N, N, N, 0.4, 0.6, 0.7]]).T,
        boundaries=[1, 3, 6],
    )
    gap = stability_gap(c)
    assert [(g["boundary"], g["experience"]) for g in gap] == [(0, 0), (1, 0), (1, 1)]
    g00, g10, g11 = gap
    assert g00["base"] == pytest.approx(0.9) and g00["depth"] == pytest.approx(0.3) and g00["recovery"] is None
    # boundary 1: exp 0 base 0.7 -> 0.85, 0.9, 0.9: no dip
    assert g10["base"] == pytest.approx(0.7) and g10["depth"] == 0.0 and g10["recovery"] == 0
    # boundary 1: exp 1 base 0.8 -> 0.5, 0.7, 0.8: back at the 3rd evaluation
    assert g11["depth"] == pytest.approx(0.3) and g11["recovery"] == 3
    assert min_acc(c) == pytest.approx((0.6 + 0.5) / 2)
    assert wc_acc(c) == pytest.approx(0.7 / 3 + (2 / 3) * 0.55)
    s = curve_summary(c)
    assert s["stability_gap_depth"] == pytest.approx(0.2)
    assert s["stability_gap_first"] == g00


def test_boundary_only_curve():
    # what the runner builds without a continual evaluator: before training, then each experience end
    c = Curve(steps=[0, 50, 100], experience=[-1, 0, 1], acc=[[0.1, 0.1], [0.9, 0.2], [0.7, 0.95]],
              boundaries=[50, 100])
    g = stability_gap(c)[0]
    assert g["base"] == pytest.approx(0.9) and g["depth"] == pytest.approx(0.2) and g["recovery"] is None
    assert min_acc(c) == pytest.approx(0.7)
    assert windowed_forgetting(c, 10) == pytest.approx(0.2)


def test_evaluations_between_boundary_and_next_experience_use_the_last_one_before():
    # evaluations every 4 steps; exp 0 ends at step 6 (no evaluation exactly there): its boundary evaluation is step 4
    c = Curve(steps=[0, 4, 8, 12], experience=[-1, 0, 1, 1], acc=[[0.1, N], [0.9, N], [0.5, 0.6], [0.95, 0.9]],
              boundaries=[6, 12])
    g = stability_gap(c)[0]
    assert g["base"] == pytest.approx(0.9) and g["depth"] == pytest.approx(0.4) and g["recovery"] == 2
    assert min_acc(c) == pytest.approx(0.5)


# -- LCA ---------------------------------------------------------------------


def test_lca_padding_with_the_last_value():
    c = Curve(steps=[0, 1, 2], experience=[-1, 0, 0], acc=[[0.0], [0.5], [1.0]], boundaries=[2])
    assert learning_curve_area(c, beta=0) == pytest.approx(0.0)
    assert learning_curve_area(c, beta=2) == pytest.approx(0.5)
    assert learning_curve_area(c, beta=5) == pytest.approx((0.0 + 0.5 + 4 * 1.0) / 6)
    assert learning_curve_area(c) == pytest.approx((0.0 + 0.5 + 9 * 1.0) / 11)


def test_lca_averages_experiences_per_position():
    c = Curve(steps=[0, 1, 2, 3, 4], experience=[-1, 0, 0, 1, 1],
              acc=[[0.0, 0.0], [0.4, 0.1], [0.8, 0.2], [0.6, 0.5], [0.6, 0.7]], boundaries=[2, 4])
    # Z_0 = 0.0, 0.4, 0.8 ; Z_1 (from exp 0's boundary, step 2) = 0.2, 0.5, 0.7
    assert learning_curve_area(c, beta=2) == pytest.approx((0.0 + 0.4 + 0.8 + 0.2 + 0.5 + 0.7) / 6)


# -- summary -----------------------------------------------------------------


def test_curve_summary_keys_values_and_json():
    c = _two_exp_dip()
    s = curve_summary(c, windows=(2, 3), beta=2, gap_window=100)
    assert set(s) == {"aaa", "min_acc", "wc_acc", "wf_2", "wf_3", "wp_2", "wp_3", "lca_2", "stability_gap",
                      "stability_gap_depth", "stability_gap_first", "steps_to_acc"}
    assert s["wf_2"] == pytest.approx(0.15) and s["wf_3"] == pytest.approx(0.3)
    assert s["lca_2"] == pytest.approx(learning_curve_area(c, 2))
    assert s["stability_gap_depth"] == pytest.approx(0.3)
    assert s["stability_gap_first"]["recovery"] == 4
    json.dumps(s, allow_nan=False)
    assert _plain(s)


def test_curve_summary_defaults_are_json_serialisable():
    for c in (_two_exp_dip(), _two_exp_dip(on_all=True), _after_switch([0.6, 0.7])):
        s = curve_summary(c)
        assert {"wf_10", "wf_100", "wp_10", "wp_100", "lca_10"} <= set(s)
        json.loads(json.dumps(s, allow_nan=False))
        assert _plain(s)


def test_long_random_curve_is_consistent_with_brute_force():
    rng = np.random.default_rng(0)
    E, T = 60, 3
    acc = rng.uniform(size=(E, T))
    acc[rng.uniform(size=(E, T)) < 0.1] = np.nan
    exp = np.repeat([-1, 0, 1, 2], [1, 20, 20, 19])
    c = Curve(np.arange(E), exp, acc, boundaries=[20, 40, 59])
    for w in (1, 2, 5, 100):
        drops = []
        for k in range(T - 1):
            s = acc[c.boundary_index(k) :, k]
            pairs = [s[i] - s[j] for j in range(len(s)) for i in range(max(0, j - w + 1), j)]
            pairs = [p for p in pairs if not np.isnan(p)]
            drops.append(max([0.0, *pairs]))
        assert windowed_forgetting(c, w) == pytest.approx(np.mean(drops))


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_windows_raise(bad):
    c = _two_exp_dip()
    with pytest.raises(ValueError):
        windowed_forgetting(c, bad)
    with pytest.raises(ValueError):
        windowed_plasticity(c, bad)
    with pytest.raises(ValueError):
        stability_gap(c, window=bad)
    with pytest.raises(ValueError):
        learning_curve_area(c, beta=-1)
