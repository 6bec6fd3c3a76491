"""Built-in strategies: one plugin per file, registered in ``clframe.registry.STRATEGIES``."""
