"""Start-up: how long the commands take before they do their work, each in a fresh process.

    python benchmarks/startup.py [--repeats 3] [--short] [--json PATH]

Figures (median of ``--repeats``, the commands taking turns; ``--short``: 2 of each, after a warm-up):

- ``clframe run experiment=quickstart strategy=naive logger.progress=false``, command to first step:
  the run's own ``startup_s`` from ``summary.json`` (from the process start, read from
  ``/proc/self/stat``, to the first optimizer step; ``clframe/run/startup.py``). Target <= 5 s, the
  issue's (a quiet machine).
- ``clframe validate experiment=quickstart`` and ``clframe list``, wall time of the process. Target
  <= 3 s: ours, not the issue's (which asks only that they do not import the training stack).

Then the import breakdown of the run (``python -X importtime``, one more run): per package
(``torch._dynamo`` apart from the rest of torch), the seconds its own modules took to import, the
seconds with what they imported, which package first imported it and under which of the command's
own imports; and what of the start-up is not imports. ``-X importtime`` slows imports down a little,
and it lists only what ``import`` statements import: a module imported by ``importlib.import_module``
(clframe's registry importing its components, about 0.1 s; Lightning importing torchmetrics) is not
listed, its own time counts as not imports and what it imports as imported from further up ("at run
time": from a function, not from a module's top level). Run it on a quiet machine: start-up is mostly
reading and running modules.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from figures import Figure, add_args, interleaved, report

RUN = ["run", "experiment=quickstart", "strategy=naive", "logger.progress=false"]
VALIDATE = ["validate", "experiment=quickstart"]
LIST = ["list"]
# packages reported apart from their parent package
SUBPACKAGES = ("torch._dynamo",)
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def command() -> list[str]:
    """``clframe`` as a user runs it: the console script beside this Python, else the same entry point."""
    script = Path(sys.executable).with_name("clframe")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from clframe.cli import main; main()"]


def env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}


def wall_s(args: list[str], cwd: Path) -> float:
    """Seconds ``clframe <args>`` takes, start to exit (it must succeed)."""
    start = time.perf_counter()
    proc = subprocess.run([*command(), *args], cwd=cwd, env=env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"clframe {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def startup_s(cwd: Path, prefix: list[str] | None = None) -> tuple[float, str]:
    """The quickstart run's ``startup_s`` and the stderr of the process (``prefix``: the interpreter
    command to run the CLI under instead of the console script)."""
    run_dir = Path(tempfile.mkdtemp(dir=cwd, prefix="run-"))
    cmd = [*prefix, "-c", "from clframe.cli import main; main()"] if prefix else command()
    proc = subprocess.run([*cmd, *RUN, f"hydra.run.dir={run_dir}"], cwd=cwd, env=env(), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"clframe {' '.join(RUN)} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary["startup_from"] != "process":
        print(f"note: startup_s is counted from {summary['startup_from']}, not the process start")
    return summary["startup_s"], proc.stderr


def group(module: str) -> str:
    """The package a module's import time is reported under."""
    sub = next((p for p in SUBPACKAGES if module == p or module.startswith(p + ".")), None)
    return sub or module.split(".")[0]


def breakdown(importtime: str) -> tuple[float, list[tuple[str, float, float, str, str]]]:
    """Total import seconds and, per package, slowest first: the seconds of its own modules, the seconds
    with what they imported, the package that first imported it, and the outermost import it came
    under (what the command itself imported), from ``-X importtime`` output."""
    rows = [(int(m[1]) / 1e6, int(m[2]) / 1e6, len(m[3]), m[4])
            for m in map(LINE.match, importtime.splitlines()) if m]
    # a module is listed after the modules it imported, so its importer is the next line indented less:
    # read backwards, the importer is the nearest line above on the stack, the outermost at its bottom
    parents: list[tuple[str | None, str]] = []
    stack: list[tuple[int, str]] = []
    for _, _, depth, name in reversed(rows):
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents.append((stack[-1][1], stack[0][1]) if stack else (None, name))
        stack.append((depth, name))
    parents.reverse()
    own: dict[str, float] = defaultdict(float)
    total: dict[str, float] = defaultdict(float)
    first: dict[str, tuple[str, str]] = {}
    for (self_s, cumulative_s, _, name), (parent, outer) in zip(rows, parents):
        g = group(name)
        own[g] += self_s
        if parent is None or group(parent) != g:  # imported from outside the package
            total[g] += cumulative_s
            first.setdefault(g, ("(at run time)" if parent is None else group(parent), outer))
    table = sorted(((g, own[g], total[g], *first.get(g, ("", ""))) for g in own), key=lambda r: -r[1])
    return sum(own.values()), table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    add_args(parser)
    args = parser.parse_args()
    # --short: 2 after the warm-up (a cold first start, files not yet in the page cache, is 1 s slower)
    repeats = 2 if args.short else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        sec = interleaved({"run": lambda: startup_s(cwd)[0], "validate": lambda: wall_s(VALIDATE, cwd),
                           "list": lambda: wall_s(LIST, cwd)}, repeats)
        traced, stderr = startup_s(cwd, [sys.executable, "-X", "importtime"])
    total, table = breakdown(stderr)
    detail = f"median of {repeats} after a warm-up"
    figures = [
        Figure("clframe run quickstart naive: command to first step", sec["run"], 5.0, higher_is_better=False,
               unit="s", detail=f"summary.json startup_s, {detail}"),
        Figure("clframe validate experiment=quickstart: wall time", sec["validate"], 3.0, higher_is_better=False,
               unit="s", detail=f"process wall time, {detail}"),
        Figure("clframe list: wall time", sec["list"], 3.0, higher_is_better=False, unit="s",
               detail=f"process wall time, {detail}"),
    ]
    print(f"Imports of the quickstart run (python -X importtime): {total:.2f} s of its {traced:.2f} s to the "
          f"first step; the other {traced - total:.2f} s are the interpreter's start, composing and checking "
          "the config, building the run and its first step.")
    print(f"{'package':<18} {'own s':>6} {'share':>6} {'with imports':>12}  {'first imported by':<18} under")
    for name, own_s, with_s, parent, outer in table:
        if own_s >= 0.01:
            print(f"{name:<18} {own_s:>6.2f} {own_s / total:>6.0%} {with_s:>12.2f}  {parent:<18} {outer}")
    print(f"{'(others)':<18} {sum(r[1] for r in table if r[1] < 0.01):>6.2f}")
    print()
    report(figures, args.json)
    for f in figures:
        print(f"  {f.name}: {f.detail}")


if __name__ == "__main__":
    main()
