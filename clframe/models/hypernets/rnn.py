"""The RNN hypernetwork (dependency preserving): a recurrent cell emits the target's weights
chunk by chunk, layer by layer, so later layers depend on earlier ones."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge
from torch import Tensor, nn

from clframe.config.registry import HYPERNETS
from clframe.models.hypernets.base import Hypernet, make_core, mip_encode
from clframe.models.hypernets.chunks import chunk_layout
from clframe.models.hypernets.target import TargetNet

CELLS = {"gru": (nn.GRU, 3), "lstm": (nn.LSTM, 4)}


class ChunkRNN(nn.Module):
    """``[task embedding, chunk embedding]`` at each step -> hidden state -> one chunk per step.

    Args:
        in_features: encoded task embedding size.
        hidden_size: recurrent units.
        cell: ``gru`` or ``lstm``.
        chunk_emb: chunk (position) embedding size; 0: none.
        n_chunks: chunks (steps) per task.
        chunk_size: weights per chunk.
        mip: encode the chunk embeddings like the task embeddings.
    """

    def __init__(self, in_features: int, hidden_size: int, cell: str, chunk_emb: int, n_chunks: int,
                 chunk_size: int, mip: bool) -> None:
        super().__init__()
        self.mip, self.n_chunks, self.cell = mip, n_chunks, cell
        self.chunk_embs = nn.Parameter(torch.randn(n_chunks, chunk_emb)) if chunk_emb else None
        extra = chunk_emb * (2 if mip else 1)
        self.rnn = CELLS[cell][0](in_features + extra, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, chunk_size)

    def forward(self, e: Tensor) -> Tensor:
        k = len(e)
        inp = e.unsqueeze(1).expand(k, self.n_chunks, -1)
        if self.chunk_embs is not None:
            c = mip_encode(self.chunk_embs) if self.mip else self.chunk_embs
            inp = torch.cat([inp, c.unsqueeze(0).expand(k, -1, -1)], dim=-1)
        h, _ = self.rnn(inp)  # [K, n_chunks, hidden]
        return self.out(h)  # [K, n_chunks, chunk_size]

    @property
    def hidden_size(self) -> int:
        return self.rnn.hidden_size

    @torch.no_grad()
    def grow(self, n: int) -> None:
        """Add ``n`` recurrent units and keep the function exactly: the old units' recurrent weights
        from the new ones and the output weights from the new ones are zero, so neither the old
        units nor the chunks see them. The grown weights are new ``nn.Parameter`` objects: call
        ``CLModule.refresh_optimizer_params`` so the optimizer trains them."""
        gates = CELLS[self.cell][1]
        h, rnn = self.hidden_size, self.rnn
        bound = (h + n) ** -0.5

        def fresh(*shape: int) -> Tensor:
            return torch.empty(*shape, device=rnn.weight_ih_l0.device).uniform_(-bound, bound)

        ih = rnn.weight_ih_l0.view(gates, h, -1)
        hh = rnn.weight_hh_l0.view(gates, h, h)
        new_hh = fresh(gates, h + n, h + n)
        new_hh[:, :h, :h] = hh
        new_hh[:, :h, h:] = 0  # old units ignore the new ones
        grown = {
            "weight_ih_l0": torch.cat([ih, fresh(gates, n, ih.shape[-1])], 1).reshape(gates * (h + n), -1),
            "weight_hh_l0": new_hh.reshape(gates * (h + n), h + n),
            **{b: torch.cat([getattr(rnn, b).view(gates, h), fresh(gates, n)], 1).reshape(-1)
               for b in ("bias_ih_l0", "bias_hh_l0")},
        }
        rnn.hidden_size = h + n
        for name, value in grown.items():
            setattr(rnn, name, nn.Parameter(value))  # nn.RNNBase refreshes its flat weight list
        out = self.out.weight
        self.out.weight = nn.Parameter(torch.cat([out, out.new_zeros(len(out), n)], 1))  # chunks ignore new units
        self.out.in_features = h + n
        rnn.flatten_parameters()

    def fit_to_state(self, state: dict[str, Any], prefix: str) -> None:
        """Grow to the hidden size of a state dict written after growing (``prefix``: this module's)."""
        stored = state.get(prefix + "rnn.weight_hh_l0")
        if stored is not None and stored.shape[1] > self.hidden_size:
            self.grow(stored.shape[1] - self.hidden_size)

    def _load_from_state_dict(self, state: dict[str, Any], prefix: str, *args: Any) -> None:
        self.fit_to_state(state, prefix)  # a grown hypernetwork's weights: grow first, then load
        super()._load_from_state_dict(state, prefix, *args)


@HYPERNETS.register("hnet_rnn")
class HnetRNN(Hypernet):
    """RNN hypernetwork: a GRU or LSTM runs over the chunks of the target's weights, one chunk
    per step, with the task embedding (and a learned chunk-position embedding) as input. Each
    layer starts a new chunk unless ``straddle``, so a chunk never mixes two layers.

    Args:
        target: the target network (supplied).
        n_tasks: number of task embeddings (supplied).
        n_classes: the target's output size (supplied).
        hidden_size: recurrent units (default 64).
        cell: ``gru`` or ``lstm`` (default ``lstm``).
        task_emb: task embedding size (default 24).
        chunk_emb: chunk-position embedding size; 0 for none (default 8).
        chunk_size: weights per chunk (default 1000).
        straddle: let chunks run across layer boundaries (default False).
        mip: magnitude-invariant parametrisation (see ``hnet_mlp``) (default False).
        task_inference: ``given`` or ``entropy`` (see ``Hypernet``) (default ``given``).
    """

    def __init__(
        self,
        target: nn.Module,
        n_tasks: int,
        n_classes: int,
        hidden_size: Annotated[int, Ge(1)] = 64,
        cell: Literal["gru", "lstm"] = "lstm",
        task_emb: Annotated[int, Ge(1)] = 24,
        chunk_emb: Annotated[int, Ge(0)] = 8,
        chunk_size: Annotated[int, Ge(1)] = 1000,
        straddle: bool = False,
        mip: bool = False,
        task_inference: Literal["given", "entropy"] = "given",
    ) -> None:
        target = TargetNet(target)
        n_chunks, size, index = chunk_layout(target.layers(), chunk_size, straddle)
        gen = ChunkRNN(task_emb * (2 if mip else 1), hidden_size, cell, chunk_emb, n_chunks, size, mip)
        super().__init__(target, n_tasks, n_classes, make_core(gen, index, target, mip), task_emb, mip, task_inference)
