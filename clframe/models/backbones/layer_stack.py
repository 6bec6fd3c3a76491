"""What the fast-weight backbones share: input projection, a stack of residual layers, readout."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from clframe.config.registry import ParamError
from clframe.data.sequences import split_lengths
from clframe.models.backbones.recurrent import check_readout, read_out, sequence_features


class LayerStack(nn.Module):
    """``Linear(F, d_model)``, then ``n_layers`` layers ``[B, T, d_model] -> [B, T, d_model]``, read out at
    each sequence's last valid step or at every step (sequences as in ``clframe.data.sequences``).

    Args:
        input_shape: ``(T, F + 1)``.
        name: the backbone's name, for messages.
        d_model: layer width.
        n_layers: stacked layers.
        n_heads: heads per layer (must divide ``d_model``).
        readout: ``last`` or ``every``.
        make_layer: builds one layer.
    """

    def __init__(self, input_shape: Sequence[int], name: str, d_model: int, n_layers: int, n_heads: int,
                 readout: str, make_layer: Callable[[], nn.Module]) -> None:
        super().__init__()
        check_readout(readout)
        if n_heads < 1 or d_model % n_heads:
            raise ParamError("n_heads", f"must divide d_model={d_model}, got {n_heads}")
        self.inp = nn.Linear(sequence_features(input_shape, name), d_model)
        self.layers = nn.ModuleList(make_layer() for _ in range(n_layers))
        self.readout, self.out_features = readout, d_model

    def forward(self, x: Tensor) -> Tensor:
        x, lengths = split_lengths(x)
        h = self.inp(x)  # [B, T, d_model]
        for layer in self.layers:
            h = layer(h)
        return read_out(h, lengths, self.readout)
