"""Import paths of clframe 0.2 that moved in 0.3, kept working: ``import clframe.plugin`` gives
``clframe.core.strategy``, and so on. Only the paths a user's own components, scripts or
notebooks import are kept (the extension API and the run helpers)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

MOVED = {
    "clframe.plugin": "clframe.core.strategy",
    "clframe.module": "clframe.core.module",
    "clframe.objectives": "clframe.core.objectives",
    "clframe.registry": "clframe.config.registry",
    "clframe.stream": "clframe.data.stream",
    "clframe.buffers": "clframe.data.buffers",
    "clframe.datasets": "clframe.data.datasets",
    "clframe.backbones": "clframe.models.backbones",
    "clframe.heads": "clframe.models.heads",
    "clframe.hypernets": "clframe.models.hypernets",
    "clframe.runner": "clframe.run.runner",
    "clframe.records": "clframe.run.records",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old path (or a module below it) to the module at its new place."""

    def _target(self, name: str) -> str | None:
        for old, new in MOVED.items():
            if name == old or name.startswith(old + "."):
                return new + name[len(old):]
        return None

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if self._target(name) else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        # the import system returns what sys.modules holds under the name after this: the real module
        sys.modules[module.__name__] = importlib.import_module(self._target(module.__name__))


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())  # before the path finder, which would load a second copy
