"""Checkpoints: the files (written atomically, loaded without unpickling), the checkpointing plugin
and resuming a run."""

from clframe.checkpoint.files import latest_checkpoint, list_checkpoints, load_checkpoint

__all__ = ["latest_checkpoint", "list_checkpoints", "load_checkpoint"]
