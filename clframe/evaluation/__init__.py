"""Evaluation: batched accuracy on experiences, and metrics as pure functions."""
