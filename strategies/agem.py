"""Averaged Gradient Episodic Memory, A-GEM (Chaudhry, Ranzato, Rohrbach & Elhoseiny, ICLR 2019)."""

from __future__ import annotations

from typing import Annotated, Any

import torch
from annotated_types import Ge
from clframe.strategies._penalty import FlatParams
from torch import Tensor

from clframe.config.registry import STRATEGIES
from clframe.core.strategy import StepContext, Strategy
from clframe.run.distributed import all_reduce_sum, rank, share, world_size


@STRATEGIES.register("agem")
class AGEM(Strategy):
    """Project the step's gradient ``g`` so that it does not increase the loss on an episodic memory:
    with ``g_ref`` the gradient of the loss on a batch drawn from the memory,
    ``g <- g - (g . g_ref / g_ref . g_ref) g_ref`` when ``g . g_ref < 0`` (Eq. 11 of the paper).

    The memory keeps ``patterns_per_experience`` random training samples of every finished experience
    (the paper's per-task memory; Avalanche's ``AGEMPlugin``). Checked against Avalanche 0.6
    (``avalanche/training/plugins/agem.py``) and the official code (facebookresearch/agem,
    ``fc_permute_mnist.py``). Where they differ this follows the paper and the official code:

    - the reference batch is ``min(sample_size, memory size)`` samples drawn uniformly *without*
      replacement from the whole memory (official ``np.random.choice(..., replace=False)``); Avalanche
      draws ``sample_size // n_experiences`` per experience, with replacement, so its batch may be
      smaller than ``sample_size``;
    - the projected vector is written to every trainable parameter (the paper's ``g~``); Avalanche
      skips parameters whose task gradient is None (e.g. another task's head), which drops their
      ``g_ref`` component.

    The defaults are the paper's MNIST settings: 25 samples per class of 10-class tasks, a reference
    batch of 256 (official ``EPS_MEM_BATCH_SIZE``). The gradient includes every loss term (task and
    other strategies' terms), as Avalanche's ``after_backward`` sees it. Works for any objective.

    Args:
        patterns_per_experience: samples stored at the end of each experience, >= 1 (default 250).
        sample_size: samples in the reference batch, >= 1 (default 256).
        seed: seed of the memory's selection and sampling (default 0).

    Under multi-process training every rank stores the same memory; with ``trainer.split_across_ranks``
    (the default) the ranks draw the same reference batch and each takes its share, so the reduced
    ``g_ref`` is the single-process one; otherwise each rank draws ``sample_size`` of its own and the
    ranks' gradients are averaged.
    """

    needs_boundaries = "it fills its episodic memory at each experience end"

    def __init__(self, patterns_per_experience: Annotated[int, Ge(1)] = 250,
                 sample_size: Annotated[int, Ge(1)] = 256, seed: int = 0) -> None:
        self.patterns_per_experience, self.sample_size, self.seed = patterns_per_experience, sample_size, seed
        self.x: Tensor | None = None  # the memory [M, ...], its labels [M] and task labels [M]
        self.y: Tensor | None = None
        self.t: Tensor | None = None
        self.gen: torch.Generator | None = None
        self.flat: FlatParams | None = None
        self.split, self.world = False, 1

    def setup(self, module: Any) -> None:
        self.flat = None  # built at the first projection, from the parameters then (a model may grow)
        self.world = world_size()
        self.split = self.world > 1 and module.split_across_ranks
        if self.world > 1 and not self.split:
            self.seed += 7919 * rank()  # each rank its own reference batches

    def _generator(self, device: torch.device) -> torch.Generator:
        if self.gen is None:
            self.gen = torch.Generator(device=device).manual_seed(self.seed)
        return self.gen

    def on_experience_start(self, exp: Any, module: Any) -> None:
        self.flat = None  # a growing model gains parameters between experiences

    def on_experience_end(self, exp: Any, module: Any) -> None:
        data = exp.train
        gen = self._generator(data.y.device)
        keep = torch.randperm(len(data), generator=gen, device=data.y.device)[: self.patterns_per_experience]
        new = (data.x[keep], data.y[keep], data.t[keep])
        if self.x is None:
            self.x, self.y, self.t = new
        else:
            self.x, self.y, self.t = (torch.cat([old, n]) for old, n in zip((self.x, self.y, self.t), new))

    def _flat(self, module: Any) -> FlatParams | None:
        """The trainable parameters as one flat vector (None if there are none)."""
        if self.flat is None:
            params = [p for p in module.parameters() if p.requires_grad]
            self.flat = FlatParams(params) if params else None
        return self.flat

    def reference_gradient(self, module: Any) -> Tensor:
        """The flat gradient [N] of the mean loss on a batch drawn from the memory, at the current weights
        (through ``torch.autograd.grad``: ``.grad`` keeps the step's gradient, and DDP's reducer, which
        expects one backward per forward, is not involved; the ranks' parts are summed explicitly)."""
        m = len(self.y)
        n = min(self.sample_size, m)
        idx = torch.randperm(m, generator=self.gen, device=self.y.device)[:n]
        scale = 1.0
        if self.split:  # this rank's share of the global reference batch, weighted into the global mean
            r = rank()
            start = sum(share(n, q, self.world) for q in range(r))
            idx = idx[start: start + share(n, r, self.world)]
            scale = len(idx) / n
        params = self._flat(module).params
        if len(idx) == 0:
            grads: tuple[Tensor | None, ...] = (None,) * len(params)
        else:
            loss = module.objective.loss(module(self.x[idx], self.t[idx]), self.y[idx]) * scale
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        ref = self.flat.flatten([torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)])
        if self.world > 1:
            all_reduce_sum(ref)
            if not self.split:
                ref /= self.world
        return ref

    def before_optimizer_step(self, ctx: StepContext) -> None:
        if self.y is None:
            return
        if self._flat(ctx.module) is None:
            return
        params = self.flat.params
        for p in params:
            if p.grad is None:  # unused by this batch's loss; the projection may still move it
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        with torch.enable_grad():
            ref = self.reference_gradient(ctx.module)
        g = self.flat.flatten(grads)
        dot = g @ ref
        # on the device, no host sync: the coefficient is 0 when the constraint g . g_ref >= 0 holds
        coef = torch.where(dot < 0, dot / (ref @ ref).clamp_min(torch.finfo(ref.dtype).tiny), 0.0)
        g.sub_(coef * ref)
        torch._foreach_copy_(grads, self.flat.split(g))

    def state_dict(self) -> dict[str, Any]:
        if self.y is None:
            return {}
        return {"x": self.x, "y": self.y, "t": self.t, "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "y" not in state:
            return
        self.x, self.y, self.t = state["x"], state["y"], state["t"]
        self.flat = None  # a checkpoint may have replaced parameters
        self.gen = torch.Generator(device=self.y.device)
        self.gen.set_state(state["rng"].cpu())
