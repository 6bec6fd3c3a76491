"""BiC: Large Scale Incremental Learning with a bias correction layer (Wu et al., CVPR 2019)."""

from __future__ import annotations

import copy
import math
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval
from clframe.strategies._bias_layer import BiasCorrected, class_mask, correct, fit_bias
from clframe.strategies._logit_buffer import check_replay_setup
from torch import Tensor, nn

from clframe.config.registry import STRATEGIES
from clframe.core.strategy import StepContext, Strategy
from clframe.data.batch import Batch
from clframe.errors import ConfigError


@STRATEGIES.register("bic")
class BiC(Strategy):
    """Stage 1 trains on the experience's data and the training part of a class-balanced exemplar memory
    with ``(1 - λ) CE + λ L_d``, ``λ = n / (n + m)`` (``n`` old, ``m`` new classes) and ``L_d`` the
    distillation (temperature ``T``) of the old model's softmax over the old classes. Stage 2 freezes the
    model and fits the two-parameter bias layer ``α o + β`` on the new classes' logits by cross-entropy on
    a held-out validation set: ``val_fraction`` of the memory, the same number per class for old classes
    (exemplars never trained on) and new ones (samples of the experience held out of stage 1). Evaluation
    applies the latest correction; the old model's outputs carry the previous one (the paper's Eq. 3).

    Wu, Chen, Wang, Ye, Liu, Guo, Fu, "Large Scale Incremental Learning", CVPR 2019; checked against
    Avalanche 0.6 (``BiCPlugin``, after FACIL's ``bic.py`` and the authors' code) for stage 2's settings:
    SGD lr 0.1, momentum 0.9, ``stage_2_epochs`` 200 with the learning rate divided by 10 at 1/4, 1/2 and
    3/4 of them, and the authors' ``0.1 β² / 2`` penalty. Where they depart from the paper this follows it:
    - Avalanche's distillation takes the old model's softmax over the batch (``softmax(dim=0)``), not
      over the classes; here it is the paper's Eq. 1, over the old classes.
    - Avalanche keeps the validation samples beside a memory of ``mem_size`` (1.1 × the budget in all);
      here they are part of ``memory_size``, split 9:1 as in the paper.
    - The paper trains on the union of the new data and the exemplars; clframe's loader iterates the
      experience, so each batch of ``B`` gets ``ceil(B · exemplars / samples)`` exemplars drawn at random
      (``batch_size_mem`` sets a fixed number instead, as Avalanche's replay loader draws).
    Exemplars are chosen at random per class (Avalanche's and FACIL's default), not by herding.
    Stage 2 runs on the validation logits computed once (the model is frozen), not a forward per epoch.
    Refused: a regression objective, a boundary-free stream, a stream with task labels or repeated classes
    (BiC is class-incremental), another strategy that rewrites the batch. Under multi-process training
    every rank keeps the same memory and bias layer (same seed, same data).

    Args:
        memory_size: exemplars kept in all, validation part included; at least 2 per class (default 2000).
        val_fraction: share of each class's exemplars held out for stage 2, in (0, 1) (default 0.1).
        temperature: distillation temperature ``T`` (default 2).
        stage_2_epochs: epochs of the bias layer's fit (default 200).
        stage_2_lr: its SGD learning rate (default 0.1).
        stage_2_batch_size: its batch size (default 128; Avalanche uses the run's).
        batch_size_mem: exemplars per batch; None draws the union's share (default None).
        seed: seed of the held-out and exemplar choices and the draws (default 0).
    """

    needs_boundaries = "it fits its bias layer at each experience end"

    def __init__(self, memory_size: Annotated[int, Ge(2)] = 2000,
                 val_fraction: Annotated[float, Interval(gt=0, lt=1)] = 0.1, temperature: Annotated[float, Gt(0)] = 2.0,
                 stage_2_epochs: Annotated[int, Ge(0)] = 200, stage_2_lr: Annotated[float, Gt(0)] = 0.1,
                 stage_2_batch_size: Annotated[int, Ge(1)] = 128, batch_size_mem: Annotated[int, Ge(1)] | None = None,
                 seed: int = 0) -> None:
        self.memory_size, self.val_fraction, self.T = memory_size, val_fraction, temperature
        self.stage_2 = (stage_2_epochs, stage_2_lr, stage_2_batch_size)
        self.batch_size_mem, self.seed = batch_size_mem, seed
        self.val: dict[int, Tensor] = {}  # class -> held-out exemplars (stage 2 only)
        self.train: dict[int, Tensor] = {}  # class -> exemplars stage 1 trains on
        self.bias = torch.tensor([1.0, 0.0])  # the latest α, β
        self.bias_classes: list[int] = []  # the classes it corrects
        self.held: Tensor | None = None  # this experience's samples held out of stage 1 [N] bool
        self.old: nn.Module | None = None
        self.old_bias: tuple[Tensor, Tensor] | None = None  # the previous (α, β) and the classes' mask
        self.lam, self.share = 0.0, 0.0
        self._old_state: dict[str, Tensor] | None = None
        self._gen: torch.Generator | None = None
        self._pool: tuple[Tensor, Tensor] | None = None
        self._w: Tensor | None = None  # this step's per-sample weights (mean over the trained samples)
        self.n_classes = 0

    def setup(self, module: Any) -> None:
        if module.objective.regression:
            raise ConfigError("strategy bic corrects the bias of new classes' logits and needs class labels; this "
                              "scenario is a regression one. Use replay or ewc instead.")
        check_replay_setup(module, self)
        seen: set[int] = set()
        for e in module.stream:
            again = sorted(seen & set(e.classes_in_this_experience))
            if again or e.task_label != 0:
                why = f"repeats classes {again}" if again else f"has task label {e.task_label}"
                raise ConfigError(f"strategy bic is class-incremental: every experience brings new classes under task "
                                  f"label 0, but experience {e.index} {why}. Use it on a class-incremental stream "
                                  "(e.g. split).")
            seen |= set(e.classes_in_this_experience)
        self.n_classes = 1 + max(c for e in module.stream for c in e.classes_in_this_experience)
        if self.memory_size < 2 * self.n_classes:
            raise ConfigError(f"strategies.bic.memory_size={self.memory_size} leaves fewer than 2 exemplars (one to "
                              f"train, one to validate) for each of the {self.n_classes} classes; set it to at "
                              f"least {2 * self.n_classes} (default 2000).")
        self._gen = torch.Generator(device=module.device).manual_seed(self.seed)

    def _quota(self, n_seen: int) -> tuple[int, int]:
        """Exemplars per class and, of them, held out for stage 2, with ``n_seen`` classes."""
        per_class = self.memory_size // n_seen
        return per_class, min(max(1, round(self.val_fraction * per_class)), per_class - 1)

    def on_experience_start(self, exp: Any, module: Any) -> None:
        old, new = sorted(self.train), sorted(exp.classes_in_this_experience)
        _, n_val = self._quota(len(old) + len(new))
        y = exp.train.y.to(module.device)
        # n_val samples of each new class, at random, are held out of stage 1 for stage 2
        prio = torch.rand(len(y), generator=self._gen, device=y.device)
        self.held = torch.zeros(len(y), dtype=torch.bool, device=y.device)
        for c in new:
            idx = (y == c).nonzero().squeeze(1)
            self.held[idx[prio[idx].argsort()[:n_val]]] = True
        self.lam = len(old) / max(len(old) + len(new), 1)
        self.old, self._old_state, self._pool = None, None, None
        self.old_bias = None if not self.bias_classes else (
            self.bias.clone(), class_mask(self.bias_classes, self.n_classes, module.device))
        if old:
            self.old = copy.deepcopy(module.model).eval().requires_grad_(False)
        n_ex = sum(len(v) for v in self.train.values())
        self.share = n_ex / max(len(y) - len(new) * n_val, 1)

    def before_forward(self, batch: Batch, module: Any) -> Batch:
        if batch.index is None:
            raise ConfigError("strategy bic holds samples out of training by their position in the experience, "
                              "but this run's batches do not carry it (Batch.index); use clframe's stream iterator.")
        if self._old_state is not None:  # resumed inside an experience: the old model comes back
            self.old = copy.deepcopy(module.model).eval().requires_grad_(False)
            self.old.load_state_dict(self._old_state)
            self._old_state = None
        keep = (~self.held[batch.index]).float()
        x, y, t = batch.x, batch.y, batch.t
        k = 0 if not self.train else self.batch_size_mem or math.ceil(len(batch) * self.share)
        if k:
            if self._pool is None:  # all training exemplars in one tensor, built once per experience
                labels = [torch.full((len(v),), c, dtype=y.dtype, device=y.device) for c, v in self.train.items()]
                self._pool = torch.cat(list(self.train.values())), torch.cat(labels)
            xs, ys = self._pool
            idx = torch.randint(0, len(ys), (k,), generator=self._gen, device=ys.device)
            x, y, t = torch.cat([x, xs[idx]]), torch.cat([y, ys[idx]]), torch.cat([t, t.new_zeros(k)])
            keep = torch.cat([keep, keep.new_ones(k)])
        self._w = keep / keep.sum().clamp(min=1)  # a mean over the trained samples, found on the device
        return Batch(x, y, t, batch.exp, weight=self._w * (1 - self.lam), n_new=len(batch), shares=batch.shares,
                     index=batch.index)

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        if self.old is None:
            return {}
        cols = sorted(self.val)
        with torch.no_grad():
            old = self.old(ctx.batch.x, ctx.batch.t)
            if self.old_bias is not None:
                old = correct(old, *self.old_bias)
            target = F.softmax(old[:, cols] / self.T, dim=1)
        d = -(target * F.log_softmax(ctx.logits[:, cols] / self.T, dim=1)).sum(1)
        return {"distill": self.lam * (d * self._w).sum()}

    @torch.no_grad()
    def on_experience_end(self, exp: Any, module: Any) -> None:
        data = exp.train.to(module.device)
        new = sorted(exp.classes_in_this_experience)
        per_class, n_val = self._quota(len(self.train) + len(new))
        if self.old is not None and new:  # stage 2: old classes' held-out exemplars and the new held-out samples
            xv = torch.cat([*(v[:n_val] for v in self.val.values()), data.x[self.held]])
            # a class may hold fewer than n_val (a small class's quota is rounded): label what each gives
            yv = torch.cat([*(torch.full((len(v[:n_val]),), c, device=module.device) for c, v in self.val.items()),
                            data.y[self.held]])
            was = module.model.training
            logits = module.model.eval()(xv, torch.zeros_like(yv))  # the model is frozen: its logits once
            module.model.train(was)
            self.bias = fit_bias(logits, yv, class_mask(new, self.n_classes, module.device), *self.stage_2, self._gen)
            self.bias_classes = new
        for c in new:  # the held-out samples validate; random others of the class train in later experiences
            self.val[c] = data.x[self.held & (data.y == c)]
            idx = ((data.y == c) & ~self.held).nonzero().squeeze(1)
            self.train[c] = data.x[idx[torch.randperm(len(idx), generator=self._gen, device=idx.device)]]
        self.val = {c: v[:n_val] for c, v in self.val.items()}
        self.train = {c: v[: per_class - n_val] for c, v in self.train.items()}
        self.old, self._pool = None, None

    def eval_model(self, module: Any) -> nn.Module | None:
        if not self.bias_classes:
            return None
        return BiasCorrected(module, self.bias, class_mask(self.bias_classes, self.n_classes, self.bias.device))

    def state_dict(self) -> dict[str, Any]:
        return {"val": self.val, "train": self.train, "bias": self.bias, "bias_classes": self.bias_classes,
                "held": self.held, "old": None if self.old is None else self.old.state_dict(),
                "old_bias": self.old_bias, "lam": self.lam, "share": self.share,
                "rng": None if self._gen is None else self._gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.val, self.train = dict(state["val"]), dict(state["train"])
        self.bias, self.bias_classes, self.held = state["bias"], list(state["bias_classes"]), state["held"]
        self._old_state, self.old_bias = state["old"], state["old_bias"]
        self.lam, self.share = state["lam"], state["share"]
        if state["rng"] is not None and self._gen is not None:  # called after setup
            self._gen.set_state(state["rng"].cpu())

