"""The chunked MLP hypernetwork (von Oswald et al., 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from annotated_types import Ge
from torch import Tensor, nn

from clframe.config.registry import HYPERNETS
from clframe.models.hypernets.base import Hypernet, make_core, mip_encode, xavier_init
from clframe.models.hypernets.chunks import chunk_layout
from clframe.models.hypernets.target import TargetNet

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def mlp(width: int, hidden: Sequence[int], out: int, activation: str) -> nn.Sequential:
    """``Linear -> activation`` per hidden width, then a linear output layer."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, out))


class ChunkedMLP(nn.Module):
    """``[task embedding, chunk embedding] -> chunk`` for every chunk in one batched pass.

    Args:
        in_features: encoded task embedding size.
        hidden: hidden widths.
        chunk_emb: chunk embedding size (unused with one chunk).
        n_chunks: chunks per task.
        chunk_size: weights per chunk.
        activation: hidden activation.
        mip: encode the chunk embeddings like the task embeddings.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], chunk_emb: int, n_chunks: int, chunk_size: int,
                 activation: str, mip: bool) -> None:
        super().__init__()
        self.mip = mip
        self.chunk_embs = nn.Parameter(torch.randn(n_chunks, chunk_emb)) if n_chunks > 1 else None
        extra = 0 if self.chunk_embs is None else chunk_emb * (2 if mip else 1)
        self.net = mlp(in_features + extra, hidden, chunk_size, activation)

    def forward(self, e: Tensor) -> Tensor:
        if self.chunk_embs is None:
            return self.net(e).unsqueeze(1)  # [K, 1, chunk_size]
        c = mip_encode(self.chunk_embs) if self.mip else self.chunk_embs
        k, s = len(e), len(c)
        inp = torch.cat([e.unsqueeze(1).expand(k, s, -1), c.unsqueeze(0).expand(k, s, -1)], dim=-1)
        return self.net(inp)  # [K, n_chunks, chunk_size]


@HYPERNETS.register("hnet_mlp")
class HnetMLP(Hypernet):
    """Chunked MLP hypernetwork: ``h([e_task, c_chunk])`` emits each chunk of the target's weights,
    the last chunk truncated; chunk embeddings are shared by all tasks and learned.

    Args:
        target: the target network (supplied).
        n_tasks: number of task embeddings (supplied).
        n_classes: the target's output size (supplied).
        hidden: hidden widths (default (25, 25), the split/permuted-MNIST setting of the paper).
        task_emb: task embedding size (default 24).
        chunk_emb: chunk embedding size (default 8).
        chunk_size: weights per chunk; None: no chunking, one output of all weights (default None).
        straddle: chunks may hold the end of one layer and the start of the next, as in the paper
            (default True).
        activation: ``relu``, ``leaky_relu``, ``elu``, ``tanh`` or ``sigmoid`` (default ``relu``).
        init: ``default`` (``nn.Linear``'s own) or ``xavier`` (Xavier-uniform weights, zero biases,
            unchunked output rows per target tensor: the reference code's init) (default ``default``).
        task_emb_init: ``normal`` (N(0, 1)) or ``zero``; the toy reference's init loop zeroes every
            1-D parameter, its task embeddings included (default ``normal``).
        mip: magnitude-invariant parametrisation: constant-norm encoding of the embeddings,
            output ``theta0 + h(...)`` around the target's own initialisation, LeakyReLU and
            Kaiming fan-out init (overrides ``activation``) (default False).
        task_inference: ``given`` or ``entropy`` (see ``Hypernet``) (default ``given``).
    """

    def __init__(
        self,
        target: nn.Module,
        n_tasks: int,
        n_classes: int,
        hidden: Sequence[Annotated[int, Ge(1)]] = (25, 25),
        task_emb: Annotated[int, Ge(1)] = 24,
        chunk_emb: Annotated[int, Ge(1)] = 8,
        chunk_size: Annotated[int, Ge(1)] | None = None,
        straddle: bool = True,
        activation: Literal["relu", "leaky_relu", "elu", "tanh", "sigmoid"] = "relu",
        init: Literal["default", "xavier"] = "default",
        task_emb_init: Literal["normal", "zero"] = "normal",
        mip: bool = False,
        task_inference: Literal["given", "entropy"] = "given",
    ) -> None:
        target = TargetNet(target)
        n_chunks, size, index = chunk_layout(target.layers(), chunk_size, straddle)
        act = "leaky_relu" if mip else activation
        gen = ChunkedMLP(task_emb * (2 if mip else 1), hidden, chunk_emb, n_chunks, size, act, mip)
        if init == "xavier" and not mip:
            xavier_init(gen, target.sizes)
        super().__init__(target, n_tasks, n_classes, make_core(gen, index, target, mip), task_emb, mip, task_inference,
                         task_emb_init)
