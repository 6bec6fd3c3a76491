"""clframe: config-driven continual-learning experiments on PyTorch Lightning."""

__version__ = "0.3.0"

from clframe.moved import install as _install_moved  # noqa: E402

_install_moved()
