"""A target network: any model whose weights come from outside, through ``functional_call``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call


class TargetNet(nn.Module):
    """Runs ``model`` with weights given as one flat vector per call.

    Every trainable parameter of ``model`` is a target weight (its shape is what the model
    declares); the model's own values stay as the initialisation ``theta0`` (the MIP residual's
    start) and no longer train. No layer is written twice: the model's own forward runs under
    ``torch.func.functional_call``, so a user's backbone becomes hypernetwork-driven unchanged.

    Args:
        model: the network, called as ``model(x, t)``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the target network has no trainable parameters to generate")
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.n_params = sum(self.sizes)
        for _, p in named:
            p.requires_grad_(False)

    def theta0(self) -> Tensor:
        """The model's own weights as one flat vector [P]."""
        params = dict(self.model.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def layers(self) -> list[int]:
        """Sizes of the layers in parameter order: the parameters of one module (a weight and its
        bias) form one layer."""
        out: list[int] = []
        last = None
        for name, size in zip(self.names, self.sizes):
            owner = name.rpartition(".")[0]
            if owner == last:
                out[-1] += size
            else:
                out.append(size)
            last = owner
        return out

    def unflatten(self, w: Tensor) -> dict[str, Tensor]:
        """Split a flat weight vector [P] into the model's named tensors."""
        return {n: c.view(s) for n, c, s in zip(self.names, w.split(self.sizes), self.shapes)}

    def forward(self, w: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """The model's output on ``x`` (task labels ``t``) with the flat weights ``w`` [P]."""
        return functional_call(self.model, self.unflatten(w), (x, t))
