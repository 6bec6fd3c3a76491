"""Temporal ensembles (Soutif-Cormerais et al., 2023): evaluate an exponential moving average of the weights,
or an ensemble of the models taken at experience ends."""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import Tensor, nn

from clframe.config.registry import STRATEGIES
from clframe.core.hooks import overrides
from clframe.core.strategy import StepContext, Strategy
from clframe.errors import ConfigError


class SnapshotEnsemble(nn.Module):
    """The paper's naive ensemble: the mean of the snapshots' softmax outputs, returned as log-probabilities
    (their argmax is the ensemble's prediction)."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        probs = torch.stack([F.softmax(m(x, t), dim=-1) for m in self.models]).mean(0)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


@STRATEGIES.register("ema")
class EMA(Strategy):
    """Train as the other strategies say; evaluate ``θ_ema``, updated every ``every`` steps by
    ``θ_ema ← decay · θ_ema + (1 - decay) · θ`` (one fused ``torch._foreach_lerp_``, no host sync), buffers
    (e.g. BatchNorm statistics) copied. The copy starts from the initial weights. Continual evaluation,
    boundary evaluation and the monitors all see it (``eval_model``), so its stability gap is measured.
    With ``snapshots: k > 0`` it evaluates instead the paper's naive ensemble: the mean softmax of the
    models taken at the last ``k`` experience ends (and the current model until the first end).

    Soutif-Cormerais, Carta, van de Weijer, "Improving Online Continual Learning Performance and Stability
    with Temporal Ensembles", CoLLAs 2023 (EMA of the weights evaluated, the trained model untouched;
    decays 0.99-0.999 in online class-incremental learning at batch 10). Reference code:
    https://github.com/AlbinSou/ocl_survey (``src/strategies/ema.py``-style plugin on Avalanche).

    Args:
        decay: weight of the running average at each update, in [0, 1) (default 0.999).
        every: optimizer steps between updates, at least 1 (default 1).
        device: where the copy lives: ``model`` (the model's device) or ``cpu`` (saves accelerator
            memory; each update then copies the weights to the host) (default ``model``).
        snapshots: 0 for the EMA; ``k > 0`` for the ensemble of the last ``k`` experience-end models
            (needs the experience boundaries) (default 0).

    Refused beside another strategy that has its own evaluated model (``icarl``, ``gdumb``, ``bic``):
    one run evaluates one model.
    """

    def __init__(self, decay: Annotated[float, Interval(ge=0, lt=1)] = 0.999, every: Annotated[int, Ge(1)] = 1,
                 device: Literal["model", "cpu"] = "model", snapshots: Annotated[int, Ge(0)] = 0) -> None:
        self.decay, self.every, self.device, self.snapshots = decay, every, device, snapshots
        if snapshots:
            self.needs_boundaries = "with snapshots > 0 it keeps the models of the experience ends"
        self.ema: nn.Module | None = None
        self.kept: list[nn.Module] = []
        # (the copy's tensors, the model's): detached views of the live parameters, found once
        self._params: tuple[list[Tensor], list[Tensor]] = ([], [])
        self._buffers: tuple[list[Tensor], list[Tensor]] = ([], [])

    def setup(self, module: Any) -> None:
        others = [k for k, s in module.strategies.items() if s is not self and overrides(s, "eval_model")]
        if others:
            raise ConfigError(f"strategy ema evaluates a temporal ensemble of the weights, but '{others[0]}' evaluates "
                              "a model of its own; a run evaluates one model. Use ema with strategies that do not "
                              "(e.g. strategy=[replay,ema], [er_ace,ema]).")
        where = "cpu" if self.device == "cpu" else module.device
        self.ema = copy.deepcopy(module.model).to(where).eval().requires_grad_(False)
        self._params = (list(self.ema.parameters()), [p.detach() for p in module.model.parameters()])
        self._buffers = (list(self.ema.buffers()), list(module.model.buffers()))

    def after_optimizer_step(self, ctx: StepContext) -> None:
        if self.snapshots or (ctx.step + 1) % self.every:
            return
        ema, live = self._params
        torch._foreach_lerp_(ema, live if self.device == "model" else [p.to("cpu") for p in live], 1.0 - self.decay)
        if self.device == "model" and self._buffers[0]:  # e.g. BatchNorm statistics: copied, not averaged
            torch._foreach_copy_(*self._buffers)
        elif self._buffers[0]:  # to the host, one tensor at a time
            for b_ema, b in zip(*self._buffers):
                b_ema.copy_(b)

    def on_experience_end(self, exp: Any, module: Any) -> None:
        if self.snapshots:
            where = "cpu" if self.device == "cpu" else module.device
            self.kept = [*self.kept, copy.deepcopy(module.model).to(where).eval().requires_grad_(False)]
            self.kept = self.kept[-self.snapshots:]

    def eval_model(self, module: Any) -> nn.Module | None:
        if self.snapshots:
            return SnapshotEnsemble(self.kept) if self.kept else None
        return _OnDevice(self.ema, module.device) if self.device == "cpu" else self.ema

    def state_dict(self) -> dict[str, Any]:
        return {"ema": None if self.ema is None else self.ema.state_dict(), "kept": [m.state_dict() for m in self.kept]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["ema"] is not None and self.ema is not None:  # called after setup
            self.ema.load_state_dict(state["ema"])
        template = self.ema
        self.kept = []
        for s in state["kept"]:
            m = copy.deepcopy(template)
            m.load_state_dict(s)
            self.kept.append(m)


class _OnDevice(nn.Module):
    """A model kept on the host, called with inputs from the accelerator: inputs go to the host, logits back."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model, self.device = model, device

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model(x.cpu(), t.cpu()).to(self.device)
