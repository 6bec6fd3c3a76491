"""``clframe compare`` (group runs, tabulate, plot) and ``clframe ablate`` (silence units of a finished
run's recurrent backbone and score it again)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clframe.cli.common import USER_ERRORS, fail


def compare_dirs(paths: list[str], metrics: list[str] | None = None, out: str | None = None,
                 options: dict[str, dict[str, Any]] | None = None, wandb: bool = False) -> None:
    """``clframe.compare.compare`` with user errors as one line."""
    from clframe.compare import compare

    try:
        compare(paths, metrics=metrics, out=out, options=options, wandb=wandb)
    except USER_ERRORS as e:
        fail(e)


def cmd_compare(args: list[str]) -> None:
    import argparse

    from clframe.compare import compare_options

    parser = argparse.ArgumentParser(
        prog="clframe compare", allow_abbrev=False,
        description="Group runs by how their configs differ (seeds aside), print mean ± std over seeds, and "
                    "write comparison.csv and comparison.png (accuracy curves over training steps), and each "
                    "monitor's comparison figure when the runs recorded it: plasticity_comparison.png "
                    "(monitors.plasticity), online_comparison.png (monitors.online), curriculum_comparison.png "
                    "(curriculum scenarios), ...")
    parser.add_argument("paths", nargs="*", metavar="DIR",
                        help="run or sweep directories, searched recursively (default: runs/ multirun/)")
    parser.add_argument("--metric", action="append", metavar="NAME",
                        help="a numeric summary.json key to show; repeatable or comma-separated (default: "
                             "final_avg_acc, avg_forgetting, bwt, and aaa, min_acc, wc_acc, stability_gap_depth, "
                             "online.online_acc when recorded)")
    parser.add_argument("--out", metavar="DIR", help="where comparison.csv/png go (default: the first DIR)")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the table and figures as one wandb run (job type 'compare') in the runs' "
                             "project and group; offline unless WANDB_MODE says otherwise, its files in DIR/wandb")
    declared = compare_options()
    for monitor, opts in declared.items():  # the monitors' own options: --<monitor>-<option>
        for name, opt in opts.items():
            parser.add_argument(f"--{monitor}-{name}".replace("_", "-"), choices=opt.choices, default=opt.default,
                                dest=f"{monitor}__{name}", help=f"{opt.help} (default {opt.default})")
    ns = parser.parse_args(args)
    options = {m: {name: getattr(ns, f"{m}__{name}") for name in opts} for m, opts in declared.items()}
    compare_dirs(ns.paths or ["runs", "multirun"], ns.metric, ns.out, options, wandb=ns.wandb)


def cmd_ablate(args: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="clframe ablate", allow_abbrev=False,
        description="Silence a fraction of every recurrent layer's units (gru, lstm, tau_rnn) in a finished run's "
                    "last checkpoint and evaluate each experience; writes ablation.json and plots/ablation.png "
                    "into the run directory.")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--fractions", default="0,0.1,0.25,0.5", help="comma-separated (default 0,0.1,0.25,0.5)")
    parser.add_argument("--order", default="random", choices=("random", "shortest_tau", "longest_tau"),
                        help="which units go first (default random; the tau orders need tau_rnn)")
    parser.add_argument("--repeats", type=int, default=5, help="random draws per fraction (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trust", action="store_true",
                        help="let the run's stored config import dotted paths (components that are not registered)")
    ns = parser.parse_args(args)
    from clframe.evaluation.ablation import ablate_run

    try:
        out = ablate_run(ns.run_dir, [float(f) for f in ns.fractions.split(",")], ns.order, ns.repeats, ns.seed,
                         ns.trust)
    except USER_ERRORS as e:
        fail(e)
    print(f"{'silenced':>9}  " + "  ".join(f"{str(n):>7}" for n in out["experiences"]))
    for f, row in zip(out["fractions"], out["mean"]):
        print(f"{f:>9.2f}  " + "  ".join(f"{v:7.3f}" for v in row))
    print(f"written: {Path(ns.run_dir) / 'ablation.json'}")
