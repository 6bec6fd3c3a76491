"""clframe: config-driven continual-learning experiments on PyTorch Lightning."""

__version__ = "0.1.0"
