"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2018), in its class-incremental form."""

from __future__ import annotations

import copy
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import Tensor, nn

from clframe.config.registry import STRATEGIES
from clframe.core.objectives import CLASSIFICATION
from clframe.core.strategy import StepContext, Strategy
from clframe.errors import ConfigError
from clframe.models.protocols import GeneratesWeights


@STRATEGIES.register("lwf")
class LwF(Strategy):
    """Distil a frozen copy of the model on the old classes:
    ``lwf_lambda * T^2 * KL(softmax(z_old / T) || softmax(z / T))`` over the old classes' logits of every
    sample of the current batch (replayed ones included), averaged over the batch.

    Before each new experience the model is copied and frozen (in eval mode: the targets carry no
    dropout noise); the old classes are those of the experiences trained so far. On a task-incremental
    stream (several task labels, a multi-head) each old task is distilled on its own head and classes, as
    in the paper: the current and the frozen model are run on the batch with that task's label (one more
    forward of each per old task); on a class-incremental stream the step's own logits are reused.

    Where this follows the paper (Li & Hoiem, Eq. 2: ``lambda_o = 1``, ``T = 2``) and not Avalanche 0.6
    (``LwFPlugin``, checked against): the teacher is in eval mode (Avalanche copies it in train mode);
    the per-task heads are distilled by calling the model with each old task's label. Not from the paper:
    the loss is scaled by ``T^2`` (Hinton et al. 2015; van de Ven & Tolias 2019's code, the class-IL
    benchmark), which neither the paper nor Avalanche has: ``lwf_lambda = 1 / T^2`` gives the paper's
    weighting, and Avalanche's ``alpha`` equals ``lwf_lambda * T^2`` here. The paper's cross-entropy
    with soft targets differs from the KL only by the targets' entropy, a constant. The paper's warm-up
    (training the new head alone first) has no counterpart with one shared head and is left out.
    A hypernetwork is refused: its frozen copy would sync with the host at every step (``hnet_reg``
    is its own output distillation).

    Args:
        lwf_lambda: weight of the distillation, >= 0 (default 1.0).
        temperature: ``T``, > 0 (default 2.0).
    """

    needs_boundaries = "it freezes a copy of the model at each new experience"

    def __init__(self, lwf_lambda: Annotated[float, Ge(0)] = 1.0, temperature: Annotated[float, Gt(0)] = 2.0) -> None:
        self.lwf_lambda, self.temperature = lwf_lambda, temperature
        self.old_classes: dict[int, list[int]] = {}  # task label -> its classes trained so far
        self.teacher: nn.Module | None = None
        self._index: dict[int, Tensor] = {}  # the same, as index tensors on the device
        self._module: Any = None
        self._multi_task = False

    def setup(self, module: Any) -> None:
        if getattr(module, "objective", CLASSIFICATION).regression:
            raise ConfigError("strategy lwf distils the old classes' softmax outputs: it needs a classification "
                              "scenario, not a regression one. Use ewc, si or mas (strategy=si) instead.")
        if isinstance(module.model, GeneratesWeights):
            raise ConfigError("strategy lwf distils a frozen copy of the model, and a hypernetwork's copy infers or "
                              "gathers tasks on the host at every call. Regularise the hypernetwork's outputs with "
                              "its own distillation instead (strategy=hnet_reg), or drop hypernet=.")
        self._module = module
        self._multi_task = len({e.task_label for e in module.stream}) > 1

    def on_experience_start(self, exp: Any, module: Any) -> None:
        if self.old_classes:
            self._freeze(module.model)

    def on_experience_end(self, exp: Any, module: Any) -> None:
        seen = set(self.old_classes.get(exp.task_label, [])) | set(exp.classes_in_this_experience)
        self.old_classes[exp.task_label] = sorted(seen)

    def _freeze(self, model: nn.Module, state: dict[str, Tensor] | None = None) -> None:
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        if state is not None:
            self.teacher.load_state_dict(state)
        device = next(model.parameters()).device
        self._index = {task: torch.tensor(c, device=device) for task, c in self.old_classes.items()}

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        if self.teacher is None:
            return {}
        x, t, T = ctx.batch.x, ctx.batch.t, self.temperature
        total = ctx.logits.new_zeros(())
        for task, idx in self._index.items():
            if self._multi_task:
                tt = torch.full_like(t, task)
                new = ctx.module.model(x, tt)
            else:
                tt, new = t, ctx.logits
            with torch.no_grad():
                old = self.teacher(x, tt)
            # KL(p_old || p_new), summed over the old classes, averaged over the batch
            total = total + F.kl_div(F.log_softmax(new[:, idx] / T, dim=1), F.log_softmax(old[:, idx] / T, dim=1),
                                     reduction="batchmean", log_target=True)
        return {"lwf": self.lwf_lambda * T * T * total}

    def state_dict(self) -> dict[str, Any]:
        return {"old_classes": {k: list(v) for k, v in self.old_classes.items()},
                "teacher": None if self.teacher is None else dict(self.teacher.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.old_classes = {int(k): list(v) for k, v in state["old_classes"].items()}
        self.teacher = None
        if state["teacher"] is not None:
            self._freeze(self._module.model, state["teacher"])
