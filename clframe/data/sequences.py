"""Variable-length sequences as one padded tensor whose last channel marks the valid steps.

A batch of sequences is ``x`` [N, T, F + 1]: ``F`` features per step, padded with zeros to ``T``
steps, and a last channel that is 1 on the steps a sequence has and 0 on its padding; a
sequence's length is the sum of that channel. Keeping the lengths inside the input means every
part of clframe that stores, mixes, subsets or evaluates inputs (replay buffers, EWC's Fisher,
the continual evaluator, a user's strategy) carries them with no extra argument. The recurrent
backbones split the channel off again (``split_lengths``) and read out at each sequence's last
valid step. Sequence scenarios always add the channel, also when every sequence has all ``T``
steps, so a recurrent backbone can rely on it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def with_lengths(x: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Append the valid-step channel to padded sequences.

    Args:
        x: padded sequences [N, T, F] (values on padded steps are zeroed).
        lengths: valid steps of each sequence [N], each in ``[1, T]`` (default: all ``T``).

    Returns:
        [N, T, F + 1].
    """
    n, steps = x.shape[:2]
    if lengths is None:
        mask = torch.ones(n, steps, dtype=x.dtype, device=x.device)
    else:
        mask = (torch.arange(steps, device=x.device) < lengths.to(x.device).unsqueeze(1)).to(x.dtype)
        x = x * mask.unsqueeze(-1)
    return torch.cat([x, mask.unsqueeze(-1)], dim=-1)


def split_lengths(x: Tensor) -> tuple[Tensor, Tensor]:
    """The features [N, T, F] and the lengths [N] (int64) of sequences made by ``with_lengths``."""
    return x[..., :-1], x[..., -1].sum(1).round().long()


def last_step(h: Tensor, lengths: Tensor) -> Tensor:
    """Each sequence's output at its last valid step: ``h[i, lengths[i] - 1]``.

    Args:
        h: per-step outputs [N, T, H] of a causal (unidirectional) network, so the outputs up to a
            sequence's length do not depend on its padding.
        lengths: valid steps [N], at least 1.
    """
    idx = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, h.shape[-1])
    return h.gather(1, idx).squeeze(1)  # [N, H]


def rows_as_steps(x: Tensor, steps: int) -> Tensor:
    """Samples [N, ...] read as ``steps`` equal chunks in order (an 8x8 image as 8 rows of 8 pixels,
    a 40-point signal as 40 steps of one value), with the valid-step channel: [N, steps, F + 1]."""
    flat = x.reshape(len(x), -1)
    if flat.shape[1] % steps:
        raise ValueError(f"{flat.shape[1]} values per sample do not split into {steps} equal steps")
    return with_lengths(flat.view(len(x), steps, -1))
