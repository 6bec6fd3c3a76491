"""iCaRL: incremental classifier and representation learning (Rebuffi, Kolesnikov, Sperl & Lampert, CVPR 2017)."""

from __future__ import annotations

import copy
import math
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor, nn

from clframe.config.registry import STRATEGIES
from clframe.core.objectives import CLASSIFICATION
from clframe.core.strategy import StepContext, Strategy
from clframe.data.batch import Batch
from clframe.errors import ConfigError
from clframe.models.model import features_of


def herding(features: Tensor, m: int) -> Tensor:
    """The paper's ConstructExemplarSet (Algorithm 4) on L2-normalised ``features`` [n, D]: the indices
    of ``m`` distinct samples, each the one that brings the running mean of those chosen closest to the
    class mean. A loop over the ``m`` choices of tensor operations over all samples (no host sync)."""
    mu, total = features.mean(0), torch.zeros_like(features[0])
    free = torch.ones(len(features), dtype=torch.bool, device=features.device)
    chosen = []
    for k in range(1, min(m, len(features)) + 1):
        dist = (mu - (total + features) / k).pow(2).sum(1).masked_fill(~free, math.inf)
        i = dist.argmin()
        chosen.append(i)
        free[i], total = False, total + features[i]
    return torch.stack(chosen) if chosen else torch.zeros(0, dtype=torch.long, device=features.device)


class NearestMeanOfExemplars(nn.Module):
    """iCaRL's classifier: logits are minus the squared distance of the normalised feature to each class's
    normalised exemplar mean; classes without exemplars get -inf."""

    def __init__(self, model: nn.Module, means: Tensor, seen: Tensor) -> None:
        super().__init__()
        self.model, self.means, self.seen = model, means, seen

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        f = F.normalize(features_of(self.model, x), dim=1)
        return (-torch.cdist(f, self.means).pow(2)).masked_fill(~self.seen, -math.inf)


@STRATEGIES.register("icarl")
class ICaRL(Strategy):
    """Train with sigmoid binary cross-entropy on all outputs, where the targets of the classes seen before
    the current experience are the previous model's sigmoid outputs (distillation) and the others one-hot;
    keep ``memory_size`` exemplars chosen by herding (``memory_size / classes seen`` per class, trimmed
    in herding order as classes arrive); classify by the nearest mean of exemplars in the backbone's
    L2-normalised feature space (``eval_model``).

    Checked against the paper and Avalanche 0.6 (``ICaRL``, ``ICaRLLossPlugin``, ``_ICaRLPlugin``): the
    same loss on all outputs and the same memory sizes (``ceil``, as Avalanche). Where they differ this
    follows the paper: herding picks distinct samples by the paper's Algorithm 4 (Avalanche runs the
    reference code's ``w_t`` iteration, which may re-pick a sample), and the class means are over the
    exemplars only (Avalanche also averages in horizontally flipped images for 4-D inputs, as the
    reference code does for CIFAR). The paper and Avalanche train on the union of the experience's data
    and the exemplars; clframe's loader iterates the experience, so each batch of ``B`` samples gets
    ``ceil(B · exemplars / experience samples)`` exemplars drawn at random: each epoch sees the same
    mix, in batches larger by that share. The cross-entropy task loss is switched off (zero weights).

    Args:
        memory_size: exemplars kept in all, at least the number of classes (default 2000, the paper's).
        seed: seed of the exemplars drawn into batches (default 0).
    """

    needs_boundaries = "it chooses its exemplars and class means at each experience end"

    def __init__(self, memory_size: Annotated[int, Ge(1)] = 2000, seed: int = 0) -> None:
        self.memory_size, self.seed = memory_size, seed
        self.exemplars: dict[int, Tensor] = {}  # class -> inputs in herding order
        self.means: Tensor | None = None
        self.old: nn.Module | None = None
        self.old_classes: list[int] = []
        self._gen: torch.Generator | None = None
        self._share = 0.0  # exemplars per stream sample in the current experience
        self._old_state: dict[str, Tensor] | None = None  # the old model's weights from a checkpoint
        self.n_classes = 0
        self._pool: tuple[Tensor, Tensor] | None = None

    def setup(self, module: Any) -> None:
        if getattr(module, "objective", CLASSIFICATION).regression:
            raise ConfigError("strategy icarl classifies by the nearest mean of class exemplars; this scenario is a "
                              "regression one. Use replay or ewc instead.")
        self.n_classes = 1 + max(c for e in module.stream for c in e.classes_in_this_experience)
        if self.memory_size < self.n_classes:
            raise ConfigError(f"strategies.icarl.memory_size={self.memory_size} keeps fewer exemplars than the "
                              f"{self.n_classes} classes; set it to at least {self.n_classes} (default 2000).")
        self._gen = torch.Generator(device=module.device).manual_seed(self.seed)

    def on_experience_start(self, exp: Any, module: Any) -> None:
        self.old_classes = sorted(self.exemplars)
        # a run resumed from an experience-end checkpoint restored the ended experience's old model: this
        # experience distils from the model as it is now
        self.old, self._old_state = None, None
        if self.exemplars:
            self.old = copy.deepcopy(module.model).eval().requires_grad_(False)
        n_ex = sum(len(v) for v in self.exemplars.values())
        self._share = n_ex / max(len(exp.train), 1)

    def before_forward(self, batch: Batch, module: Any) -> Batch:
        if self._old_state is not None:  # resumed inside an experience: the old model comes back
            self.old = copy.deepcopy(module.model).eval().requires_grad_(False)
            self.old.load_state_dict(self._old_state)
            self._old_state = None
        x, y, t = batch.x, batch.y, batch.t
        k = math.ceil(len(batch) * self._share)
        if k:
            if self._pool is None:  # all exemplars in one tensor, built once per experience
                labels = [torch.full((len(v),), c, dtype=y.dtype, device=y.device) for c, v in self.exemplars.items()]
                self._pool = torch.cat(list(self.exemplars.values())), torch.cat(labels)
            xs, ys = self._pool
            idx = torch.randint(0, len(ys), (k,), generator=self._gen, device=ys.device)
            x, y, t = torch.cat([x, xs[idx]]), torch.cat([y, ys[idx]]), torch.cat([t, t.new_zeros(k)])
        # the task loss is iCaRL's binary cross-entropy (loss_terms), not the cross-entropy
        return Batch(x, y, t, batch.exp, weight=y.new_zeros(len(y), dtype=torch.float32), n_new=len(batch),
                     shares=batch.shares)

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        logits, y = ctx.logits, ctx.batch.y
        target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        if self.old is not None and self.old_classes:
            with torch.no_grad():
                old = torch.sigmoid(self.old(ctx.batch.x, ctx.batch.t))
            cols = torch.tensor(self.old_classes, device=logits.device)
            target[:, cols] = old[:, cols]
        return {"icarl": F.binary_cross_entropy_with_logits(logits, target)}

    @torch.no_grad()
    def on_experience_end(self, exp: Any, module: Any) -> None:
        backbone = module.model.backbone
        was_training = backbone.training
        backbone.eval()
        new = [c for c in exp.classes_in_this_experience if c not in self.exemplars]
        per_class = math.ceil(self.memory_size / (len(self.exemplars) + len(new)))
        for c in new:
            xc = exp.train.x[exp.train.y == c].to(module.device)
            self.exemplars[c] = xc[herding(F.normalize(features_of(module.model, xc), dim=1), per_class)]
        self.exemplars = {c: v[:per_class] for c, v in self.exemplars.items()}  # ReduceExemplarSet
        means = torch.zeros(self.n_classes, backbone.out_features, device=module.device)
        for c, v in self.exemplars.items():
            means[c] = F.normalize(F.normalize(features_of(module.model, v), dim=1).mean(0), dim=0)
        self.means, self._pool = means, None
        backbone.train(was_training)

    def eval_model(self, module: Any) -> nn.Module | None:
        if self.means is None:
            return None
        seen = torch.zeros(self.n_classes, dtype=torch.bool, device=self.means.device)
        seen[torch.tensor(sorted(self.exemplars), device=seen.device)] = True
        return NearestMeanOfExemplars(module.model, self.means, seen)

    def state_dict(self) -> dict[str, Any]:
        return {"exemplars": self.exemplars, "means": self.means, "old_classes": self.old_classes,
                "old": None if self.old is None else self.old.state_dict(), "share": self._share,
                "rng": None if self._gen is None else self._gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.exemplars, self.means, self.old_classes = dict(state["exemplars"]), state["means"], state["old_classes"]
        self._share, self._old_state = state["share"], state["old"]
        if state["rng"] is not None and self._gen is not None:  # called after setup
            self._gen.set_state(state["rng"].cpu())
