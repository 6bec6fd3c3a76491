"""Per-layer statistics of a network on probe inputs: dead units, effective rank, weight norms and
largest singular values (the loss-of-plasticity diagnostics at each task end)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clframe.evaluation.evaluate import evaluation_mode

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.SiLU)


def effective_rank(features: Tensor) -> Tensor:
    """``exp(H(p))`` with ``p`` the singular values of ``features`` [N, D] normalised to sum 1
    (Roy & Vetterli, 2007): D for isotropic features, 1 for rank-one features."""
    s = torch.linalg.svdvals(features.float())
    p = s / s.sum().clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


def layer_stats(module: nn.Module, x: Tensor, t: Tensor) -> dict[str, Tensor]:
    """Per layer, on the probe inputs ``x``: the fraction of dead units (never positive; for ReLU-like
    activations), the effective rank of the features, and per weight matrix its Frobenius norm and
    largest singular value. Values stay on the device."""
    acts: dict[str, Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: acts.__setitem__(name, out.flatten(1)))
             for name, m in module.named_modules() if isinstance(m, ACTIVATIONS)]
    try:
        with evaluation_mode(module) as model, torch.no_grad():
            model(x, t)
    finally:
        for h in hooks:
            h.remove()
    out: dict[str, Tensor] = {}
    for name, h in acts.items():
        out[f"dead_fraction/{name}"] = ((h > 0).sum(0) == 0).float().mean()
        out[f"effective_rank/{name}"] = effective_rank(h)
    for name, p in module.named_parameters():
        if p.ndim >= 2:
            w = p.detach().flatten(1)
            out[f"weight_norm/{name}"] = w.norm()
            out[f"sigma_max/{name}"] = torch.linalg.matrix_norm(w, 2)
    return out
