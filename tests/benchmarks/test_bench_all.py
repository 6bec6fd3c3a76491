"""``make bench`` (benchmarks/bench_all.py): one table of every script's figures against their targets,
a failing script reported without stopping the others, an unknown name refused with the valid ones."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

FAST = '''
import argparse, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure, add_args, report
p = argparse.ArgumentParser(); add_args(p); a = p.parse_args()
report([Figure("fast thing vs plain", 1.5 if a.short else 0.5, 1.0),
        Figure("start-up", 2.0, 5.0, higher_is_better=False, unit="s")], a.json)
'''


@pytest.fixture
def bench_all(tmp_path, monkeypatch):
    shutil.copy(BENCH / "figures.py", tmp_path)
    shutil.copy(BENCH / "bench_all.py", tmp_path)
    (tmp_path / "fast.py").write_text(FAST)
    (tmp_path / "broken.py").write_text("raise RuntimeError('no data here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("bench_all", None)
    import bench_all

    yield bench_all
    sys.modules.pop("bench_all", None)


def test_one_table_with_each_figure_its_target_and_whether_it_is_met(bench_all, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["bench_all.py", "--out", str(tmp_path / "all.json")])
    bench_all.main()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("fast ", "broken "))]
    assert any("fast thing vs plain" in r and "1.50x" in r and ">= 1" in r and " met" in r for r in rows), out
    assert any("start-up" in r and "2.00s" in r and "<= 5" in r and " met" in r for r in rows), out
    assert "2 of 2 figures meet their targets; 1 scripts had problems" in out
    assert "broken.py: exit 1: RuntimeError: no data here" in out


def test_full_mode_runs_the_scripts_without_short_and_reports_a_missed_target(bench_all, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_all.py", "--only", "fast", "--full"])
    bench_all.main()
    out = capsys.readouterr().out
    assert "0.50x" in out and "NOT MET" in out and "broken" not in out


def test_an_unknown_benchmark_is_refused_with_the_names_of_the_real_ones(bench_all, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench_all.py", "--only", "fsat"])
    with pytest.raises(SystemExit, match=r"no benchmark named \['fsat'\]; the benchmarks are broken, fast"):
        bench_all.main()
