"""RNN with a trainable timescale per neuron (Khajehabdollahi, Zeraati et al., ICLR 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor, nn

from clframe.config.registry import BACKBONES, ParamError
from clframe.data.sequences import split_lengths
from clframe.models.backbones.recurrent import check_readout, read_out, sequence_features


def tau_scan(u: Tensor, m: Tensor, h0: Tensor, slope: float) -> Tensor:
    """The time loop ``h_t = LeakyReLU(u_t + h_{t-1} @ m)``; TorchScript- and compile-friendly.

    Args:
        u: input drive already divided by tau, ``(W_in x_t + b) / tau`` [T, B, H].
        m: ``diag(1 - 1/tau) + W_hh^T / tau`` [H, H]: the leak and the recurrence in one matmul.
        h0: initial state [B, H].
        slope: LeakyReLU negative slope.

    Returns:
        every state [T, B, H].
    """
    hs = []
    h = h0
    for t in range(u.shape[0]):
        h = F.leaky_relu(torch.addmm(u[t], h, m), slope)
        hs.append(h)
    return torch.stack(hs)


class TauLayer(nn.Module):
    """One layer: ``h_t = LeakyReLU((1 - 1/tau) h_{t-1} + (W_hh h_{t-1} + W_in x_t + b) / tau)``.

    ``tau`` [H] is trainable and used as ``clamp(tau, min=1)`` (the raw parameter is not
    constrained, as in the reference); the diagonal of ``W_hh`` is zeroed in every forward pass,
    so self-excitation can only come from the leak ``1 - 1/tau``.
    """

    def __init__(self, in_features: int, hidden: int, slope: float, train_tau: bool) -> None:
        super().__init__()
        self.w_in = nn.Linear(in_features, hidden)
        self.w_hh = nn.Linear(hidden, hidden, bias=False)
        # 1 + U(0, 1) per neuron
        self.tau = nn.Parameter(1 + torch.rand(hidden), requires_grad=train_tau)
        self.register_buffer("off_diagonal", 1 - torch.eye(hidden), persistent=False)
        self.slope = slope

    def timescales(self) -> Tensor:
        """The effective tau of each neuron [H] (clamped at 1)."""
        return self.tau.clamp(min=1)

    def forward(self, x: Tensor, scan: object) -> Tensor:
        inv = 1 / self.timescales()  # [H]
        m = torch.diag(1 - inv) + (self.w_hh.weight * self.off_diagonal).t() * inv  # [H, H]
        u = (self.w_in(x) * inv).transpose(0, 1).contiguous()  # [T, B, H]
        h0 = x.new_zeros(x.shape[0], m.shape[0])
        return scan(u, m, h0, self.slope).transpose(0, 1)  # [B, T, H]


@BACKBONES.register("tau_rnn")
class TauRNN(nn.Module):
    """Stacked per-neuron-timescale RNN layers over ``[B, T, F + 1]`` sequences.

    Args:
        input_shape: ``(T, F + 1)`` (supplied by the scenario).
        hidden: neurons per layer (default 64).
        num_layers: stacked layers (default 1).
        readout: ``last`` (each sequence's last valid step, as in the reference) or ``every`` (default
            ``last``).
        slope: LeakyReLU negative slope (default 0.01).
        train_tau: learn the timescales; false keeps them at their initial 1 + U(0, 1) (default True).
        loop: ``eager`` (a Python loop), ``script`` (``torch.jit.script``-ed) or ``compile``
            (``torch.compile``-d) time loop (default ``eager``).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden: Annotated[int, Ge(1)] = 64,
        num_layers: Annotated[int, Ge(1)] = 1,
        readout: Literal["last", "every"] = "last",
        slope: float = 0.01,
        train_tau: bool = True,
        loop: Literal["eager", "script", "compile"] = "eager",
    ) -> None:
        super().__init__()
        check_readout(readout)
        features = sequence_features(input_shape, "tau_rnn")
        self.layers = nn.ModuleList(
            TauLayer(features if i == 0 else hidden, hidden, slope, train_tau) for i in range(num_layers))
        if loop not in ("eager", "script", "compile"):
            raise ParamError("loop", f"must be eager, script or compile, got '{loop}'")
        self.loop = loop
        self._scan = None
        self.readout = readout
        self.out_features = hidden

    def scan_fn(self) -> object:
        """The time-loop function for ``loop`` (scripted or compiled once, lazily)."""
        if self._scan is None:
            self._scan = {"eager": lambda: tau_scan, "script": lambda: torch.jit.script(tau_scan),
                          "compile": lambda: torch.compile(tau_scan, dynamic=True)}[self.loop]()
        return self._scan

    def forward(self, x: Tensor) -> Tensor:
        h, lengths = split_lengths(x)
        scan = self.scan_fn()
        for layer in self.layers:
            h = layer(h, scan)
        return read_out(h, lengths, self.readout)

    def timescales(self) -> list[Tensor]:
        """The effective tau of every neuron, one [hidden] tensor per layer."""
        return [layer.timescales().detach() for layer in self.layers]

    def diagnostics(self) -> dict[str, float]:
        """Mean, spread and quantiles of tau per layer, e.g. ``tau/l0/mean``, ``tau/l0/max`` (one host transfer)."""
        names = ("mean", "std", "min", "p10", "median", "p90", "max")
        q = torch.tensor([0.1, 0.5, 0.9])
        stats = torch.stack([torch.cat([torch.stack([t.mean(), t.std(), t.min()]), torch.quantile(t, q.to(t.device)),
                                        t.max().view(1)]) for t in (t.float() for t in self.timescales())])
        return {f"tau/l{i}/{n}": v for i, row in enumerate(stats.tolist()) for n, v in zip(names, row)}

    @torch.no_grad()
    def silence(self, layer: int, units: Tensor) -> None:
        """Silence ``units`` of ``layer`` in place: zero incoming weights and bias (the state then
        stays at 0, as LeakyReLU(0) = 0) and outgoing weights (the reference's ablation)."""
        lay = self.layers[layer]
        lay.w_in.weight[units] = 0
        lay.w_in.bias[units] = 0
        lay.w_hh.weight[units] = 0
        lay.w_hh.weight[:, units] = 0
        if layer + 1 < len(self.layers):
            self.layers[layer + 1].w_in.weight[:, units] = 0

    def __getstate__(self) -> dict:
        # a scripted or compiled function does not pickle (deepcopy, checkpoints); it is rebuilt lazily
        state = self.__dict__.copy()
        state["_scan"] = None
        return state
