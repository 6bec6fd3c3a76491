"""clframe: config-driven continual-learning experiments on PyTorch Lightning."""

__version__ = "0.2.0"
