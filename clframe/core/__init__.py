"""The learner: ``CLModule`` (the training step and the event dispatch), the ``Strategy`` and
``Monitor`` bases, the model protocols and the objectives."""
