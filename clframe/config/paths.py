"""Where the shipped configs are: the repository's ``configs/`` (an editable install), the copy an
installed wheel carries (``clframe/configs``), or ``$CLFRAME_CONFIG_DIR``."""

from __future__ import annotations

import os
from pathlib import Path


def _config_dir() -> Path:
    """``$CLFRAME_CONFIG_DIR``, else the configs an installed wheel carries (``clframe/configs``), else the
    repository's ``configs/`` (an editable install)."""
    if os.environ.get("CLFRAME_CONFIG_DIR"):
        return Path(os.environ["CLFRAME_CONFIG_DIR"])
    package = Path(__file__).resolve().parents[1]
    return package / "configs" if (package / "configs").is_dir() else package.parent / "configs"


CONFIG_DIR = _config_dir()
