"""The run config: its schema and validation (``schema``), composition with Hydra (``compose``), the
component registries (``registry``), type and range checks (``typecheck``), which configs may import
code (``trust``) and the keys renamed since older versions (``compat``)."""

from clframe.config.compose import CONFIG_DIR, GROUPS, check_overrides, compose, group_options
from clframe.config.schema import SECTIONS, validate

__all__ = ["CONFIG_DIR", "GROUPS", "SECTIONS", "check_overrides", "compose", "group_options", "validate"]
