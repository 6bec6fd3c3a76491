"""``clframe run | validate | list | compare | ablate``."""

from __future__ import annotations

import sys

from clframe.cli.common import fail
from clframe.cli.compare import cmd_ablate, cmd_compare
from clframe.cli.info import cmd_list, cmd_validate
from clframe.cli.run import cmd_run
from clframe.cli.tune import cmd_tune

# its import time is the origin of a run's startup_s where there is no /proc (clframe.run.startup)
from clframe.run import startup  # noqa: F401

USAGE = """usage:
  clframe run [-m] [key=value ...]     train (Hydra overrides; -m sweeps: strategy=naive,ewc seed=0,1)
  clframe tune protocol=test|end|first_task|gtep strategies=a,b experiment=NAME [tune_experiment=NAME]
                                       [trials=20] [seeds=3] [key=value ...]
                                       tune each strategy under a protocol (Optuna), then evaluate the choice
                                       over seeds; a table of choices, scores, gaps and rankings
  clframe validate [key=value ...]     compose, check and build a config without training
  clframe list                         every registered backbone, head, strategy, scenario, dataset
  clframe compare [DIR ...] [--metric NAME ...] [--out DIR]
                                       group runs (sweep or run directories) by config difference: a table
                                       of mean ± std over seeds, and comparison.csv + comparison.png
  clframe ablate RUN_DIR [--fractions 0,0.1,0.25,0.5] [--order random|shortest_tau|longest_tau]
                                       scores with a fraction of a recurrent backbone's units silenced
"""

COMMANDS = {"run": cmd_run, "tune": cmd_tune, "validate": cmd_validate, "list": cmd_list, "compare": cmd_compare,
            "ablate": cmd_ablate}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] not in COMMANDS:
        from clframe.errors import unknown

        fail(unknown("command", argv[0], COMMANDS))
    COMMANDS[argv[0]](argv[1:])
