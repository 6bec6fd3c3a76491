"""One training batch: inputs, labels, task labels, and what strategies and the iterator add."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import Tensor


@dataclass
class Batch:
    """One training batch.

    Args:
        x: inputs [B, ...].
        y: class labels [B].
        t: task labels [B].
        exp: index of the experience the batch belongs to.
        weight: optional per-sample loss weights [B]; the task loss is then
            ``sum(weight * ce)`` instead of ``mean(ce)``.
        n_new: how many leading samples are from the stream (the rest were added by
            strategies, e.g. replay); ``None`` means all of them.
        shares: under multi-process training, how many of this step's stream samples each rank
            holds, in rank order (their sum is the global batch; a rank whose share is 0 holds a
            repeated sample that only keeps it in step); ``None`` in one process.
        index: each of the leading ``n_new`` samples' position in its experience's training data
            [n_new], set by the stream iterator (e.g. for a strategy that holds samples out of
            training); ``None`` when the batch came from elsewhere.
        raw: the inputs before the training augmentation [B, ...], when the run augments
            (``x`` is then what the model is fed); what strategies store is ``new_samples().x``,
            which is raw, so replayed samples are augmented afresh each time they are drawn.
    """

    x: Tensor
    y: Tensor
    t: Tensor
    exp: int
    weight: Tensor | None = None
    n_new: int | None = None
    shares: tuple[int, ...] | None = None
    index: Tensor | None = None
    raw: Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    def new_samples(self) -> Batch:
        """The part of the batch that came from the stream, un-augmented (``raw``) when the run augments."""
        n = len(self) if self.n_new is None else self.n_new
        x = self.x if self.raw is None else self.raw
        return replace(self, x=x[:n], y=self.y[:n], t=self.t[:n], weight=None, n_new=None, raw=None)
