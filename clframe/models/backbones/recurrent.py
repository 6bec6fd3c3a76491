"""What the recurrent backbones share: the sequence-input check, the readout and unit silencing."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from clframe.config.registry import ParamError
from clframe.data.sequences import last_step

READOUTS = ("last", "every")


def sequence_features(input_shape: Sequence[int], name: str) -> int:
    """Features per step of sequence inputs ``[T, F + 1]`` (``clframe.data.sequences``); a ``ParamError``
    that says which scenarios give sequences otherwise."""
    if len(input_shape) != 2 or input_shape[-1] < 2:
        raise ParamError(
            "input_shape", f"is {tuple(input_shape)}, but the {name} backbone reads sequences [T, F + 1] "
            "(F features per step and the valid-step channel of clframe.data.sequences)",
            "Use a sequence scenario (sequential_digits, sequential_mnist1d, parity, dms) or backbone=mlp.")
    return int(input_shape[-1]) - 1


def check_readout(readout: str) -> None:
    """``ParamError`` for an unknown readout (the sizes are bounded in the backbones' signatures)."""
    if readout not in READOUTS:
        raise ParamError("readout", f"must be one of {', '.join(READOUTS)}, got '{readout}'")


def read_out(out: Tensor, lengths: Tensor, readout: str) -> Tensor:
    """Features of the last valid step [B, H] (``last``), or of every step [B, T, H] (``every``)."""
    return last_step(out, lengths) if readout == "last" else out
