"""Running one config: build it, train it with the chosen engine, record and summarise it."""
