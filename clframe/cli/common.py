"""What the commands share: the errors shown to users as one line, and how."""

from __future__ import annotations

import sys
from typing import NoReturn

from clframe.errors import ConfigError, DatasetNotFoundError

USER_ERRORS = (ConfigError, DatasetNotFoundError)


def fail(e: Exception) -> NoReturn:
    """Print ``error: <e>`` to stderr and exit with status 2 (a user error, no traceback)."""
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
