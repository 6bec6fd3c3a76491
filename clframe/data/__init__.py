"""Data: the stream vocabulary (``Experience``, ``Stream``, ``Scenario``), batches, the stream
iterator, curricula, sequences, replay buffers and the datasets."""
