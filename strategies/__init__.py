"""Built-in strategies: one plugin per file, registered in ``clframe.config.registry.STRATEGIES``."""
