"""Built-in scenarios: one stream builder per file, registered in ``clframe.config.registry.SCENARIOS``."""
