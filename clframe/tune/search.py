"""Search spaces: ``configs/search/<strategy>.yaml`` (or a folder of the user's), in the Hydra Optuna
sweeper's syntax, one override key per dimension."""

from __future__ import annotations

from pathlib import Path

from clframe.config.paths import CONFIG_DIR
from clframe.errors import ConfigError, did_you_mean

SEARCH_DIR = CONFIG_DIR / "search"


def load_space(strategy: str, search_dir: str | None = None) -> tuple[dict[str, str], Path]:
    """The search space of ``strategy`` (key -> sweeper expression) and its file: ``<search_dir>/<strategy>.yaml``
    when the user's folder has one, else the shipped one."""
    from omegaconf import OmegaConf

    dirs = [Path(search_dir)] if search_dir else []
    for d in [*dirs, SEARCH_DIR]:
        path = d / f"{strategy}.yaml"
        if path.is_file():
            space = OmegaConf.to_container(OmegaConf.load(path))
            if not isinstance(space, dict) or not space:
                raise ConfigError(f"search space {path} must map override keys to sweeper expressions, e.g. "
                                  "'train.lr: tag(log, interval(0.001, 0.3))'.")
            return {str(k): str(v) for k, v in space.items()}, path
    shipped = sorted(p.stem for p in SEARCH_DIR.glob("*.yaml"))
    where = " or ".join(str(d) for d in [*dirs, SEARCH_DIR])
    raise ConfigError(f"no search space for strategy '{strategy}' in {where}. Shipped: {', '.join(shipped)}. Write "
                      f"{strategy}.yaml (e.g. 'strategies.{strategy}.<param>: tag(log, interval(0.01, 10))') in a "
                      "folder and pass search_dir=<folder>.")


def check_space(strategy: str, space: dict[str, str], path: Path) -> None:
    """Refuse a dimension ``strategies.<name>.<param>`` of a strategy the run does not choose or a parameter
    the strategy does not have, naming the valid ones (other keys are checked when the trials' configs are)."""
    from clframe.config.registry import STRATEGIES

    for key in space:
        parts = key.lstrip("+").split(".")
        if parts[0] != "strategies":
            continue
        if len(parts) != 3 or parts[1] != strategy:
            raise ConfigError(f"search space {path}: '{key}' is not a setting of strategy '{strategy}'; its keys are "
                              f"strategies.{strategy}.<parameter>.")
        params = sorted(STRATEGIES.params(strategy))
        if parts[2] not in params:
            raise ConfigError(f"search space {path} names '{key}', but strategy '{strategy}' has no parameter "
                              f"'{parts[2]}'.{did_you_mean(parts[2], params)} Its parameters: {', '.join(params)}.")
