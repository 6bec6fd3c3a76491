"""The model's first step for uint8 images: scale to [0, 1], normalise each channel, and optionally
lay the batch out channels-last.

It lives in the model, not in the data, so that every forward pass sees the same inputs: training,
evaluation, a strategy's teacher (LwF, DER's logits) and its importance estimates (EWC's Fisher) all
call the model on the stored uint8 images. Its statistics are non-persistent buffers: they move with
the model and add no keys to its state dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    """``(x / 255 - mean) / std`` per channel for uint8 images (floats are only normalised).

    Args:
        mean: per-channel mean of the [0, 1] pixels.
        std: per-channel standard deviation.
        channels_last: return the batch in ``torch.channels_last`` memory format, for convolutions on
            a GPU's tensor cores (default False).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels_last: bool = False) -> None:
        super().__init__()
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"mean and std need one positive std per channel, got {mean}, {std}")
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.uint8:
            # one fused pass over the floats: (x/255 - mean) / std = x * (1/(255 std)) - mean/std
            x = torch.addcmul(-self.mean * self.inv_std, x.float(), self.inv_std / 255.0)
        else:
            x = (x - self.mean) * self.inv_std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def extra_repr(self) -> str:
        return f"channels={self.mean.shape[1]}, channels_last={self.channels_last}"
