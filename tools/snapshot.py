"""Record what a set of short, seeded runs produce, and compare two records: the check that a refactor
changed no behaviour.

    python tools/snapshot.py record before.json      # on the old code
    python tools/snapshot.py record after.json       # on the new code
    python tools/snapshot.py compare before.json after.json

A record holds, per run, its ``summary.json`` without timings, paths and versions (every accuracy
matrix, curve metric and monitor entry), the text of ``metrics.csv`` and of the other CSV files the
run wrote, and the names of its figures. ``compare`` prints every difference and exits 1 if there is
one. Runs are on the CPU with one thread, so records of the same code are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from clframe.run.results import TIMING_KEYS

os.environ.setdefault("WANDB_MODE", "offline")
QUICK = ["logger.progress=false", "train.num_threads=1"]
# name -> overrides: the quickstart and short versions of the experiments each monitor belongs to
RUNS: dict[str, list[str]] = {
    "quickstart_naive": ["experiment=quickstart", "strategy=naive"],
    "quickstart_replay": ["experiment=quickstart", "strategy=replay"],
    "split_digits_naive": ["experiment=split_digits", "strategy=naive"],
    "split_digits_ewc": ["experiment=split_digits", "strategy=ewc"],
    "split_digits_replay": ["experiment=split_digits", "strategy=replay"],
    "stability_gap_rotated": ["experiment=stability_gap_rotated", "train.epochs=2"],
    "plasticity_random_labels": ["experiment=plasticity_random_labels", "scenario.n_tasks=3", "train.epochs=10"],
    "parity_curriculum": ["experiment=parity_curriculum", "scenario.n_max=4", "scenario.max_steps_per_level=2000"],
    "hnet_toy_regression": ["experiment=hnet_toy_regression", "train.epochs=100"],
    "fewshot_digits": ["experiment=fewshot_digits", "train.epochs=1", "scenario.n_train_episodes=400"],
    "kalman_synthetic": ["experiment=kalman_synthetic", "scenario.n_segments=2", "scenario.samples_per_segment=1000"],
}
UNCOMPARED = TIMING_KEYS | {"versions"}


def record_run(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """Run ``overrides`` into ``run_dir`` in this process; what it produced, minus timings and paths."""
    from clframe.config import compose
    from clframe.run.runner import run

    summary = run(compose([*overrides, *QUICK]), run_dir)
    return {
        "summary": json.loads(json.dumps({k: v for k, v in summary.items() if k not in UNCOMPARED})),
        "csv": {p.name: p.read_text() for p in sorted(run_dir.glob("*.csv"))},
        "figures": sorted(p.name for p in (run_dir / "plots").glob("*.png")),
    }


def record(out: Path, names: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"{name} ...", file=sys.stderr, flush=True)
            result[name] = record_run(RUNS[name], Path(tmp) / name)
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({len(result)} runs)", file=sys.stderr)


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where ``a`` and ``b`` differ, as dotted paths with both values (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in
                (differences(a.get(k), b.get(k), f"{where}.{k}" if where else str(k)) if k in a and k in b
                 else [f"{where}.{k}: only in {'the first' if k in a else 'the second'}"])]
    if json.dumps(a) != json.dumps(b):
        return [f"{where}: {json.dumps(a)[:200]} != {json.dumps(b)[:200]}"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run the snapshot set and write the record")
    rec.add_argument("out", type=Path)
    rec.add_argument("--only", nargs="*", choices=sorted(RUNS), help="a subset of the runs (default: all)")
    cmp = sub.add_parser("compare", help="print the differences between two records; exit 1 if any")
    cmp.add_argument("first", type=Path)
    cmp.add_argument("second", type=Path)
    ns = parser.parse_args(argv)
    if ns.command == "record":
        record(ns.out, ns.only or list(RUNS))
        return 0
    diffs = differences(json.loads(ns.first.read_text()), json.loads(ns.second.read_text()))
    print("\n".join(diffs) if diffs else "identical")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
