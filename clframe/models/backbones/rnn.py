"""GRU and LSTM backbones over padded sequences (``torch.nn.GRU`` / ``torch.nn.LSTM``: cuDNN on GPU)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Interval
from torch import Tensor, nn

from clframe.config.registry import BACKBONES
from clframe.data.sequences import split_lengths
from clframe.models.backbones.recurrent import check_readout, read_out, sequence_features


class TorchRNN(nn.Module):
    """A multi-layer ``torch.nn`` recurrent network over ``[B, T, F + 1]`` sequences.

    The whole padded sequence runs through one fused call (no packing): the network is causal, so
    the output at a sequence's last valid step does not depend on the padding after it.

    Args:
        input_shape: ``(T, F + 1)`` (supplied by the scenario).
        hidden: units per layer (default 64).
        num_layers: stacked layers (default 1).
        readout: ``last``: features of each sequence's last valid step [B, hidden]; ``every``: of
            every step [B, T, hidden] (default ``last``).
        dropout: dropout between layers, in training only (default 0.0).
    """

    rnn_class: type[nn.RNNBase] = nn.GRU

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden: Annotated[int, Ge(1)] = 64,
        num_layers: Annotated[int, Ge(1)] = 1,
        readout: Literal["last", "every"] = "last",
        dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
    ) -> None:
        super().__init__()
        check_readout(readout)
        features = sequence_features(input_shape, self.rnn_class.__name__.lower())
        self.rnn = self.rnn_class(features, hidden, num_layers, batch_first=True, dropout=dropout)
        self.readout, self.num_layers = readout, num_layers
        self.out_features = hidden

    def forward(self, x: Tensor) -> Tensor:
        x, lengths = split_lengths(x)
        # the features are a strided view; the fused RNN kernels copy such input on every call anyway
        out, _ = self.rnn(x.contiguous())  # [B, T, hidden]
        return read_out(out, lengths, self.readout)

    @torch.no_grad()
    def silence(self, layer: int, units: Tensor) -> None:
        """Silence ``units`` of ``layer`` in place: with their incoming weights and biases zero their
        hidden state stays 0 (GRU: z = 1/2, n = 0; LSTM: c = 0), and their outgoing weights are zeroed."""
        rnn, gates = self.rnn, 3 if isinstance(self.rnn, nn.GRU) else 4
        rows = (units.view(1, -1) + rnn.hidden_size * torch.arange(gates, device=units.device).view(-1, 1)).flatten()
        for name in (f"weight_ih_l{layer}", f"weight_hh_l{layer}", f"bias_ih_l{layer}", f"bias_hh_l{layer}"):
            if hasattr(rnn, name):
                getattr(rnn, name)[rows] = 0
        getattr(rnn, f"weight_hh_l{layer}")[:, units] = 0
        if layer + 1 < self.num_layers:
            getattr(rnn, f"weight_ih_l{layer + 1}")[:, units] = 0


@BACKBONES.register("gru")
class GRU(TorchRNN):
    """Multi-layer GRU (``torch.nn.GRU``) over padded sequences; the arguments are ``TorchRNN``'s."""

    rnn_class = nn.GRU


@BACKBONES.register("lstm")
class LSTM(TorchRNN):
    """Multi-layer LSTM (``torch.nn.LSTM``) over padded sequences; the arguments are ``TorchRNN``'s."""

    rnn_class = nn.LSTM
