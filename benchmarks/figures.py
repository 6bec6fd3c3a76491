"""The one format every benchmark reports in, so ``make bench`` can print one table.

A benchmark script measures, then calls ``report(figures, args.json)``: it prints its figures and,
with ``--json PATH``, writes them for ``benchmarks/bench_all.py`` to collect.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Figure:
    """One measured figure against its target.

    Args:
        name: what was measured, e.g. ``"MLP b64, default engine vs plain loop"``.
        value: the measured number (a ratio within one run, or seconds).
        target: the number it must reach.
        higher_is_better: the target is a floor (True, default) or a ceiling (False).
        unit: ``"x"`` for a ratio (default) or ``"s"``.
        detail: how it was measured (repetitions, medians), printed under the table.
    """

    name: str
    value: float
    target: float
    higher_is_better: bool = True
    unit: str = "x"
    detail: str = ""

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def row(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        return (f"{self.name:<62} {self.value:>7.2f}{self.unit:<2} {sign} {self.target:<5g}{self.unit:<2} "
                f"{self.value / self.target:>6.2f}  {'met' if self.met else 'NOT MET'}")


HEADER = f"{'figure':<62} {'value':>9} {'target':>10} {'ratio':>6}  status"


def add_args(parser: argparse.ArgumentParser) -> None:
    """``--short`` (a quick run for ``make bench``) and ``--json PATH`` (write the figures there)."""
    parser.add_argument("--short", action="store_true", help="a quick run (make bench)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")


def interleaved(runs: dict[str, Callable[[], float]], repeats: int, warmup: bool = True) -> dict[str, float]:
    """Median of ``repeats`` calls of each function, the functions taking turns so that a change of
    machine load hits all of them alike (after one warm-up call each, default)."""
    if warmup:
        for fn in runs.values():
            fn()
    results: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            results[k].append(fn())
    return {k: statistics.median(v) for k, v in results.items()}


def report(figures: list[Figure], json_path: Path | None = None) -> None:
    """Print the figures as a table and, with ``json_path``, write them there."""
    print(HEADER)
    for f in figures:
        print(f.row())
    if json_path is not None:
        json_path.write_text(json.dumps([asdict(f) for f in figures], indent=1))


def load(json_path: Path) -> list[Figure]:
    return [Figure(**d) for d in json.loads(json_path.read_text())]
