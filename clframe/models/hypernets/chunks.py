"""How a flat weight vector is cut into the chunks a hypernetwork emits."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def chunk_layout(layers: list[int], chunk_size: int | None, straddle: bool) -> tuple[int, int, Tensor]:
    """Chunks of at most ``chunk_size`` weights covering the target's weights.

    Args:
        layers: the sizes of the target's layers, in order (their sum is P).
        chunk_size: weights per chunk; None: one chunk of all P weights.
        straddle: chunks run over the flat vector and may hold the end of one layer and the
            start of the next (von Oswald et al.'s chunking); False: each layer starts a new chunk,
            its last chunk truncated, so one chunk never mixes two layers.

    Returns:
        ``(n_chunks, chunk_size, index)``: ``index`` [P] picks the P weights, in order, out of the
        emitted chunks flattened to [n_chunks * chunk_size].
    """
    total = sum(layers)
    size = total if chunk_size is None else chunk_size
    if size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if straddle or chunk_size is None:
        return math.ceil(total / size), size, torch.arange(total)
    parts, start = [], 0
    for n in layers:
        # layer j fills its own chunks from their first position
        parts.append(start * size + torch.arange(n))
        start += math.ceil(n / size)
    return start, size, torch.cat(parts)
