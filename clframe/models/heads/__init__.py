"""Built-in heads. A head takes ``in_features, n_classes, n_tasks`` and maps
``(features [B, F], task labels [B])`` to logits [B, n_classes]."""
