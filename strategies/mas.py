"""Memory Aware Synapses (Aljundi, Babiloni, Elhoseiny, Rohrbach & Tuytelaars, ECCV 2018)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge
from clframe.strategies._penalty import FlatParams, Quadratic
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from clframe.config.registry import STRATEGIES
from clframe.core.strategy import StepContext, Strategy
from clframe.data.stream import TensorData
from clframe.run.distributed import all_reduce_sum, rank, world_size


def output_sensitivity(model: nn.Module, params: list[nn.Parameter], data: TensorData, kind: str, batch_size: int,
                       max_samples: int | None) -> Tensor:
    """MAS's importance, flat [N] over ``params``: the mean over samples of ``|d ||f(x)||^2 / d theta|``
    (``per_sample``, Eq. 2-4), or ``sum over minibatches of |d sum_batch ||f(x)||^2 / d theta|`` over the
    sample count (``minibatch``, the authors' code), in eval mode. No labels are read. Logits a multi-head
    masks out (filled with the dtype's minimum) are not outputs: they count as zero. Under multi-process
    training each rank takes every ``world_size``-th sample and the sums are reduced."""
    n = len(data) if max_samples is None else min(max_samples, len(data))
    if world_size() > 1:
        data = data.subset(torch.arange(rank(), n, world_size(), device=data.y.device))
        n = len(data)
    names = {id(p): k for k, p in model.named_parameters()}
    keys = [names[id(p)] for p in params]
    buffers = dict(model.named_buffers())

    def sq_norm(p: dict[str, Tensor], x: Tensor, t: Tensor) -> Tensor:
        out = functional_call(model, (p, buffers), (x, t))
        return out.masked_fill(out == torch.finfo(out.dtype).min, 0).pow(2).sum()

    per_sample = vmap(grad(lambda p, x, t: sq_norm(p, x[None], t[None])), in_dims=(None, 0, 0))
    total = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
    detached = {k: p.detach() for k, p in zip(keys, params)}
    was_training = model.training
    model.eval()  # no dropout noise, frozen BatchNorm statistics (as the authors' code)
    for i in range(0, n, batch_size):
        s = slice(i, min(i + batch_size, n))
        x, t = data.x[s], data.t[s]
        if kind == "per_sample":
            g = per_sample(detached, x, t)
            total += torch.cat([g[k].abs().sum(0).flatten() for k in keys])
        else:
            with torch.enable_grad():
                g = torch.autograd.grad(sq_norm(dict(zip(keys, params)), x, t), params, allow_unused=True)
            total += torch.cat([total.new_zeros(p.numel()) if v is None else v.abs().flatten()
                                for p, v in zip(params, g)])
    model.train(was_training)
    count = torch.tensor([float(n)], device=total.device)
    if world_size() > 1:
        all_reduce_sum(total)
        all_reduce_sum(count)
    return total / count.clamp(min=1)


@STRATEGIES.register("mas")
class MAS(Strategy):
    """Penalty ``mas_lambda * sum_k Omega_k (theta_k - theta*_k)^2`` (Aljundi et al. 2018, Eq. 5), like EWC's
    with the Fisher replaced by the sensitivity of the squared L2 norm of the output, measured on the
    experience's inputs without their labels. At each experience end the new importance is added to the
    old (the authors' ``accumulate_reg_params``) and ``theta*`` becomes the current weights.

    Checked against the authors' code (rahafaljundi/MAS-Memory-Aware-Synapses, ``compute_importance_l2``,
    the ``minibatch`` estimate) and Avalanche 0.6 (``MASPlugin``, after FACIL). Avalanche departs from the
    paper: it averages the old and new importance (``alpha = 0.5``) instead of adding them, estimates in
    train mode, and takes the absolute gradient of each minibatch's mean (the ``minibatch`` estimate up to
    the last partial batch); here ``per_sample`` (Eq. 4) is the default.

    The importance grows with the squared logits and adds up over experiences: plain SGD on the penalty
    is stable only while ``lr * 2 * mas_lambda * max(Omega) < 2`` (split digits at lr 0.1 wants
    ``mas_lambda`` about 0.1 or less by the fourth experience; a divergence is reported naming ``mas``).

    Args:
        mas_lambda: penalty strength, >= 0 (default 1.0, the paper's and Avalanche's).
        importance: ``per_sample`` (mean absolute per-sample gradient, the paper's Eq. 4) or
            ``minibatch`` (absolute gradient of each minibatch's summed squared norm, over the sample
            count: the authors' code; it equals ``per_sample`` at batch size 1) (default ``per_sample``).
        batch_size: samples per pass of the importance estimate, >= 1 (default 32).
        max_samples: estimate on the experience's first ``max_samples`` samples (default: all).
    """

    needs_boundaries = "it measures its importances at each experience end"

    def __init__(self, mas_lambda: Annotated[float, Ge(0)] = 1.0,
                 importance: Literal["per_sample", "minibatch"] = "per_sample",
                 batch_size: Annotated[int, Ge(1)] = 32, max_samples: Annotated[int, Ge(1)] | None = None) -> None:
        self.mas_lambda, self.kind, self.batch_size, self.max_samples = mas_lambda, importance, batch_size, max_samples
        self.flat: FlatParams | None = None
        self.penalty_fn: Quadratic | None = None
        self.importance = self.anchor = torch.empty(0)  # [N] each, in the flat order of the trainable parameters
        self.consolidated = False
        self._pending: dict[str, Any] | None = None

    def setup(self, module: Any) -> None:
        self.flat = FlatParams([p for p in module.parameters() if p.requires_grad])
        self.anchor = self.flat.read().clone()
        self.importance = torch.zeros_like(self.anchor)
        self.penalty_fn = Quadratic(self.flat, self.anchor, self.importance)  # both updated in place
        self.consolidated = False
        if self._pending is not None:
            self.load_state_dict(self._pending)

    def on_experience_end(self, exp: Any, module: Any) -> None:
        # cuDNN's RNN backward refuses eval mode, and vmap has no rule for its fused ops (as in _fisher)
        kind, bs = self.kind, self.batch_size
        if kind == "per_sample" and any(isinstance(m, nn.RNNBase) for m in module.modules()):
            kind, bs = "minibatch", 1
        with torch.backends.cudnn.flags(enabled=False):
            new = output_sensitivity(module.model, self.flat.params, exp.train, kind, bs, self.max_samples)
        self.importance.add_(new)
        self.anchor.copy_(self.flat.read())
        self.consolidated = True

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        return {"mas": self.penalty_fn(self.mas_lambda)} if self.consolidated else {}

    def state_dict(self) -> dict[str, Any]:
        return {"importance": self.importance, "anchor": self.anchor, "consolidated": self.consolidated}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.flat is None:  # loaded before setup: applied there
            self._pending = state
            return
        self.importance.copy_(state["importance"])
        self.anchor.copy_(state["anchor"])
        self.consolidated, self._pending = bool(state["consolidated"]), None
