"""``make bench``: every benchmark in ``benchmarks/`` in short mode, one after the other (never two at
once: they measure ratios on a shared CPU), then one table of every figure, its target and its ratio.

    python benchmarks/bench_all.py [--only throughput cnn_mnist ...] [--full] [--out bench.json]

Each script runs in its own process (one thread, as it sets itself) with ``--short --json``; a script
that fails is reported with its error and the others still run. Run it on a quiet machine: under load
the ratios swing (0.65x to 0.87x for the same code).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from figures import HEADER, Figure, load  # noqa: E402

NOT_BENCHMARKS = {"figures.py", "bench_all.py"}


def scripts(only: list[str] | None) -> list[Path]:
    """The benchmark scripts, by name; ``only`` picks some (names with or without ``.py``)."""
    found = sorted(p for p in HERE.glob("*.py") if p.name not in NOT_BENCHMARKS and not p.name.startswith("_"))
    if not only:
        return found
    names = {n.removesuffix(".py") for n in only}
    unknown = names - {p.stem for p in found}
    if unknown:
        raise SystemExit(f"error: no benchmark named {sorted(unknown)}; the benchmarks are "
                         f"{', '.join(p.stem for p in found)}.")
    return [p for p in found if p.stem in names]


def run_one(script: Path, short: bool, tmp: Path) -> tuple[list[Figure], str | None, float]:
    """The script's figures, its error (None if it ran) and its seconds."""
    out = tmp / f"{script.stem}.json"
    cmd = [sys.executable, str(script), "--json", str(out)] + (["--short"] if short else [])
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return [], f"exit {proc.returncode}: {lines[-1] if lines else ''}", seconds
    if not out.exists():  # e.g. skipped: its data is not on this machine
        return [], f"wrote no figures: {proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ''}", seconds
    return load(out), None, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=None, help="run only these benchmarks")
    parser.add_argument("--full", action="store_true", help="each script's full settings, not --short")
    parser.add_argument("--out", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args()
    rows: list[tuple[str, Figure]] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for script in scripts(args.only):
            print(f"running {script.name} ...", flush=True)
            figures, error, seconds = run_one(script, not args.full, Path(tmp))
            print(f"  {seconds:.0f} s" + (f": {error}" if error else ""), flush=True)
            if error:
                problems.append(f"{script.name}: {error}")
            rows += [(script.stem, f) for f in figures]
    print()
    print(f"{'benchmark':<16} {HEADER}")
    for name, f in rows:
        print(f"{name:<16} {f.row()}")
    met = sum(f.met for _, f in rows)
    print(f"\n{met} of {len(rows)} figures meet their targets" + (f"; {len(problems)} scripts had problems:" if problems
                                                                   else "."))
    for p in problems:
        print(f"  {p}")
    if args.out is not None:
        args.out.write_text(json.dumps([{"benchmark": n, **asdict(f)} for n, f in rows], indent=1))


if __name__ == "__main__":
    main()
