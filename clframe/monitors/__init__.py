"""Monitors: everything that observes a run (one module or subpackage each, registered in
``MONITORS`` and switched on under ``monitors.<name>``)."""
