"""Same config and seed, same results on CPU; another seed, other results."""

from __future__ import annotations

import json

from clframe.config import compose
from clframe.run.runner import run

METRICS = ("acc_matrix", "final_avg_acc", "avg_forgetting", "bwt", "final_accs", "final_losses", "steps", "samples")


def summary(overrides, run_dir):
    run(compose(overrides), run_dir)
    return json.loads((run_dir / "summary.json").read_text())


def test_same_seed_same_results(tiny, tmp_path):
    overrides = tiny + ["strategy=[replay,ewc]", "seed=3"]
    a = summary(overrides, tmp_path / "a")
    b = summary(overrides, tmp_path / "b")
    for k in METRICS:
        assert a[k] == b[k], k
    assert a["final_losses"]["loss/ewc"] > 0  # both strategies were active
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()


def test_different_seed_different_results(tiny, tmp_path):
    overrides = tiny + ["strategy=[replay,ewc]"]
    a = summary(overrides + ["seed=3"], tmp_path / "a")
    b = summary(overrides + ["seed=4"], tmp_path / "b")
    assert a["seed"] == 3 and b["seed"] == 4
    assert a["acc_matrix"] != b["acc_matrix"]
