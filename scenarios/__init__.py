"""Built-in scenarios: one stream builder per file, registered in ``clframe.registry.SCENARIOS``."""
