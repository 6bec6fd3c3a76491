"""When a run's start-up began: the origin of ``summary.json``'s ``startup_s`` (to the end of the first
training step), named by ``startup_from``:

- ``process``: the start of the process, read from ``/proc/self/stat`` (Linux): the interpreter's start,
  every import and the config's composition are in it, as a user waiting on ``clframe run`` sees them;
- ``clframe.cli``: where there is no ``/proc``, the import of ``clframe.cli`` (or of this module, if the
  run was started from Python): the interpreter's own start (about 0.05 s) is missed;
- ``run``: the call of ``clframe.run.runner.run``, for every run after the first in one process (the
  later jobs of a sweep, tests): the imports were paid by the first.

Only the standard library is imported here: ``clframe.cli`` imports this module first thing.
"""

from __future__ import annotations

import os
import time

# the clock the kernel counts a process's start time in (since boot, suspend included)
_CLOCK = getattr(time, "CLOCK_BOOTTIME", None)
_first = [True]


def now() -> float:
    """Seconds on the clock process start times are read in (``CLOCK_BOOTTIME`` on Linux, else monotonic)."""
    return time.clock_gettime(_CLOCK) if _CLOCK is not None else time.monotonic()


_IMPORTED = now()


def process_start() -> float | None:
    """When this process started, on ``now()``'s clock; None without ``/proc`` (not Linux)."""
    if _CLOCK is None:
        return None
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # field 22, counted after the command name, which is in parentheses and may hold spaces
    return int(stat.rpartition(")")[2].split()[19]) / os.sysconf("SC_CLK_TCK")


def origin() -> tuple[float, str]:
    """The moment a run's start-up is measured from and its name (see the module's docstring). The first
    call in a process gets the process start; each later call (a later run in this process) gets now."""
    if not _first[0]:
        return now(), "run"
    _first[0] = False
    start = process_start()
    return (start, "process") if start is not None else (_IMPORTED, "clframe.cli")
