"""What every hypernetwork shares: task embeddings, MIP, weight generation, task inference."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from clframe.models.hypernets.target import TargetNet
from clframe.models.model import Generic
from clframe.models.protocols import LearnsOnline


def mip_encode(e: Tensor) -> Tensor:
    """MIP's constant-norm input: each coordinate g becomes ``[cos(pi g / 2), sin(pi g / 2)]``,
    so the input's norm is sqrt(dim) whatever the (learned) embedding is. [..., D] -> [..., 2D]"""
    a = (math.pi / 2) * e
    return torch.cat([a.cos(), a.sin()], dim=-1)


def xavier_init(module: nn.Module, sizes: list[int] | None = None) -> None:
    """Xavier-uniform weights and zero biases for every linear layer (the hypercl reference's init).

    The reference has one output layer per target tensor; with ``sizes`` (the target tensors' sizes,
    when one output row emits one target weight) the last layer's rows are initialised block by
    block with each tensor's own fan-out, which is the same thing."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    for m in linears:
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
    last = linears[-1]
    if sizes is not None and sum(sizes) == last.out_features:
        with torch.no_grad():
            for rows in last.weight.split(sizes):
                bound = (6 / (last.in_features + len(rows))) ** 0.5
                rows.uniform_(-bound, bound)


def mip_init(module: nn.Module, n_params: int) -> None:
    """MIP's initialisation of the generator: Kaiming normal, fan-out, LeakyReLU gain, zero biases.

    The last linear layer emits a chunk, but its fan-out is taken as all ``n_params`` generated
    weights, as in the paper's unchunked hypernetwork, so the chunk size does not change the scale
    of the residual around the target's initialisation."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    for m in linears[:-1]:
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
        nn.init.zeros_(m.bias)
    last = linears[-1]
    gain = nn.init.calculate_gain("leaky_relu")
    nn.init.normal_(last.weight, std=gain / n_params ** 0.5)
    nn.init.zeros_(last.bias)


class Core(nn.Module):
    """The hypernetwork's weights Theta: encoded task embeddings [K, E] -> target weights [K, P].

    Args:
        generator: maps encoded task embeddings [K, E] to chunks [K, n_chunks, chunk_size].
        index: [P] positions of the target's weights in the flattened chunks.
        theta0: the target's initial weights [P] for MIP's residual output, or None (no residual).
    """

    def __init__(self, generator: nn.Module, index: Tensor, theta0: Tensor | None) -> None:
        super().__init__()
        self.generator = generator
        self.register_buffer("index", index, persistent=False)
        self.theta0 = None if theta0 is None else nn.Parameter(theta0.clone())

    def forward(self, e: Tensor) -> Tensor:
        w = self.generator(e).flatten(1).index_select(1, self.index)  # [K, P]
        return w if self.theta0 is None else self.theta0 + w


def make_core(generator: nn.Module, index: Tensor, target: TargetNet, mip: bool) -> Core:
    """``Core`` around ``generator``; with ``mip``, MIP's init and the residual around the target's init."""
    if mip:
        mip_init(generator, target.n_params)
    return Core(generator, index, target.theta0() if mip else None)


class Hypernet(Generic, nn.Module):
    """A task-conditioned hypernetwork driving a target network.

    ``forward(x, t)`` generates the target's weights from task ``t``'s embedding once per call
    (not per sample) and runs the target with them. In training every sample of a batch must have
    the same task label (one experience; checked on the device, without a host sync). In
    evaluation a batch may mix task labels (one generation for all of them, one target pass per
    task present), or, with ``task_inference="entropy"``, the task labels are ignored and inferred.

    Args:
        target: the target network (supplied by the framework: the configured backbone and head).
        n_tasks: number of task embeddings (supplied: the scenario's task labels).
        n_classes: the target's output size (supplied).
        core: the generator of the subclass, wrapped in ``Core``.
        task_emb: task embedding size.
        mip: encode inputs with ``mip_encode`` (the core was built for 2 * ``task_emb`` inputs).
        task_inference: ``given`` (use the task labels) or ``entropy``: pick, per sample, the
            trained task embedding whose output has the lowest predictive entropy over that task's
            classes. Its cost: one generation for all trained tasks and one target forward per
            trained task on every evaluated batch, so evaluation is K times the given-label cost.
        task_emb_init: task embeddings drawn from N(0, 1) (``normal``) or all ``zero`` (default
            ``normal``).
    """

    def __init__(self, target: nn.Module, n_tasks: int, n_classes: int, core: Core, task_emb: int, mip: bool,
                 task_inference: Literal["given", "entropy"], task_emb_init: Literal["normal", "zero"] = "normal"
                 ) -> None:
        super().__init__()
        if task_inference not in ("given", "entropy"):
            raise ValueError(f"unknown task_inference '{task_inference}' (given, entropy)")
        if any(isinstance(m, LearnsOnline) for m in target.modules()):
            raise ValueError("its target's head updates its own state (e.g. head=kalman) and cannot be generated by a "
                             "hypernetwork; use hypernet=none or a linear head")
        self.target = target if isinstance(target, TargetNet) else TargetNet(target)
        self.n_tasks, self.mip, self.task_inference = n_tasks, mip, task_inference
        self.core = core
        scale = 1.0 if task_emb_init == "normal" else 0.0
        self.task_embs = nn.ParameterList(nn.Parameter(scale * torch.randn(task_emb)) for _ in range(n_tasks))
        self.register_buffer("trained", torch.zeros(n_tasks, dtype=torch.bool))
        self.register_buffer("class_mask", torch.ones(n_tasks, n_classes, dtype=torch.bool))
        self.masking = False
        self.regression = False

    @property
    def backbone(self) -> nn.Module:
        """The target network's backbone (whose weights this generates)."""
        return self.target.model.backbone

    @property
    def head(self) -> nn.Module:
        """The target network's head."""
        return self.target.model.head

    @property
    def n_params(self) -> int:
        """The number of target weights generated per task."""
        return self.target.n_params

    def theta(self) -> list[tuple[str, nn.Parameter]]:
        """The hypernetwork's own weights (everything but the task embeddings), named as in ``core``."""
        return list(self.core.named_parameters())

    def set_active_task(self, task: int) -> None:
        """Only task ``task``'s embedding trains from now on; the others are frozen (no gradient,
        so no optimizer moves them, momentum included)."""
        for i, p in enumerate(self.task_embs):
            p.requires_grad_(i == task)

    def set_objective(self, name: str) -> None:
        """Regression outputs are not masked by task (``set_task_classes`` is then ignored)."""
        self.regression = name == "regression"

    def set_task_classes(self, task: int, classes: list[int]) -> None:
        """Restrict task ``task``'s outputs to ``classes`` (classification; ignored for regression)."""
        if self.regression:
            return
        self.masking = True
        self.class_mask[task] = False
        self.class_mask[task, classes] = True

    def embeddings(self, tasks: Tensor, detach: bool = False) -> Tensor:
        """The (MIP-encoded) embeddings of ``tasks`` [K] -> [K, E]; ``detach``: no gradient to them."""
        e = torch.stack([p.detach() if detach else p for p in self.task_embs])[tasks]
        return mip_encode(e) if self.mip else e

    def generate(self, tasks: Tensor, delta: dict[str, Tensor] | None = None, detach_emb: bool = False) -> Tensor:
        """Target weights of ``tasks`` [K] in one call: [K, P].

        Args:
            tasks: task labels [K] (a tensor on the device; no host sync).
            delta: an offset per ``theta()`` name: generate with Theta + delta (the look-ahead).
            detach_emb: no gradient to the task embeddings (default False).
        """
        e = self.embeddings(tasks, detach_emb)
        if delta is None:
            return self.core(e)
        params = {n: p + delta[n] for n, p in self.core.named_parameters()}
        return functional_call(self.core, params, (e,))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if t.ndim != 1:
            raise ValueError(f"a hypernetwork takes one task label per sample, got task labels {list(t.shape)}")
        if self.training:
            task = t[:1]
            torch._assert_async((t == task).all(), "a hypernetwork's training batch must hold one task label")
            self.trained[task] = True
            return self._mask(self.target(self.generate(task)[0], x, t), t)
        if self.task_inference == "entropy" and bool(self.trained.any()):
            tasks, out = self._infer(x, t)
            return self._mask(out, tasks)
        present = t.unique()
        weights = self.generate(present)
        if len(present) == 1:
            return self._mask(self.target(weights[0], x, t), t)
        out = None
        for w, k in zip(weights, present):
            sel = t == k
            o = self.target(w, x[sel], t[sel])
            out = o.new_empty(len(x), *o.shape[1:]) if out is None else out
            out[sel] = o
        return self._mask(out, t)

    def _mask(self, out: Tensor, tasks: Tensor) -> Tensor:
        if not self.masking:
            return out
        return out.masked_fill(~self.class_mask[tasks], torch.finfo(out.dtype).min)

    def _infer(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        seen = self.trained.nonzero().flatten()
        weights = self.generate(seen)
        outs = torch.stack([self.target(w, x, t) for w in weights])  # [K, B, C]
        if self.masking:
            outs = outs.masked_fill(~self.class_mask[seen].unsqueeze(1), torch.finfo(outs.dtype).min)
        entropy = torch.special.entr(outs.softmax(-1)).sum(-1)  # [K, B]
        pick = entropy.argmin(0)  # [B]
        return seen[pick], outs[pick, torch.arange(len(x), device=x.device)]

    @torch.no_grad()
    def infer_tasks(self, x: Tensor, t: Tensor) -> Tensor:
        """Per sample, the trained task whose masked softmax output has the lowest entropy [B]
        (the given ``t`` when no task has trained yet)."""
        if not bool(self.trained.any()):
            return t
        return self._infer(x, t)[0]
