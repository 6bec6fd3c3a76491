"""GDumb (Prabhu, Torr & Dokania, ECCV 2020): a class-balanced memory, and a model trained from scratch
on the memory alone before each evaluation."""

from __future__ import annotations

import copy
from typing import Annotated, Any

import torch
from annotated_types import Ge
from torch import nn

from clframe.config.registry import STRATEGIES, ParamError
from clframe.core.objectives import CLASSIFICATION
from clframe.core.strategy import Strategy
from clframe.data.buffers import ClassBalancedBuffer
from clframe.errors import ConfigError


@STRATEGIES.register("gdumb")
class GDumb(Strategy):
    """"Greedy sampler and dumb learner": the stream only fills a memory of ``mem_size`` samples kept
    balanced over the classes seen so far; at each experience end a copy of the model, reset to its
    initial weights, trains on the memory alone, and that copy is what is evaluated (``eval_model``)
    until the next experience end. Training never continues from it: the next retraining starts from
    the initial weights again. The run's own training steps change nothing (``lr_factor`` 0): the
    learner does not learn from the stream.

    Checked against the paper and Avalanche 0.6 (``GDumbPlugin``: reset to the initial model, the class-
    balanced ``ClassBalancedBuffer(adaptive_size=True)``, training on the buffer with the strategy's
    optimizer, epochs and batch size). As in Avalanche, the memory keeps a random class-balanced subset
    of all data seen; the paper's greedy sampler fills it in stream order and evicts from the largest
    class, which over a shuffled stream draws the same distribution. The paper's own recipe (SGD with
    cosine annealing and warm restarts, cutmix) is not reproduced: the retraining uses the run's optimizer
    type and settings (its learning rate, momentum, weight decay), as Avalanche does; give ``epochs`` and
    ``batch_size`` the run's ``train.epochs`` and ``train.batch_size`` to retrain as Avalanche's GDumb does
    (an experiment can: ``strategy_settings: {gdumb: {epochs: ${train.epochs}}}``).

    Args:
        mem_size: memory capacity in samples, at least 1 (default 200).
        epochs: passes over the memory in each retraining (default 10).
        batch_size: samples per retraining step (default 32).
        seed: seed of the memory's draws and the retraining's shuffles (default 0).
    """

    needs_boundaries = "it retrains its model on the memory at each experience end"

    def __init__(self, mem_size: int = 200, epochs: Annotated[int, Ge(1)] = 10,
                 batch_size: Annotated[int, Ge(1)] = 32, seed: int = 0) -> None:
        if mem_size < 1:
            raise ParamError("mem_size", f"must be >= 1, got {mem_size}", "Set the memory's size in samples "
                             "(default 200).")
        self.memory = ClassBalancedBuffer(mem_size, seed)
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self.initial: dict[str, torch.Tensor] = {}
        self.learned: dict[str, torch.Tensor] | None = None  # the retrained copy's weights
        self._model: nn.Module | None = None

    def setup(self, module: Any) -> None:
        if getattr(module, "objective", CLASSIFICATION).regression:
            raise ConfigError("strategy gdumb keeps a class-balanced memory: it needs a classification scenario, "
                              "not a regression one. Use replay (strategy=replay) instead.")
        others = [k for k in module.strategies if module.strategies[k] is not self]
        if others:
            raise ConfigError(f"strategy gdumb trains its own model on its memory and ignores the stream's training; "
                              f"combining it with {', '.join(others)} changes nothing it evaluates. Run gdumb alone "
                              "(strategy=gdumb).")
        if not self.initial:  # on a resume the checkpoint's initial weights come back instead
            self.initial = {k: v.detach().clone() for k, v in module.model.state_dict().items()}

    def lr_factor(self, step: int, experience: int, step_in_experience: int, experience_steps: int) -> float:
        return 0.0  # the dumb learner does not learn from the stream

    def on_experience_end(self, exp: Any, module: Any) -> None:
        self.memory.update(exp.train.x, exp.train.y, exp.train.t)
        model = self._fresh(module)
        opt = type(module._optimizer)(model.parameters(), **module._optimizer.defaults)
        x, y, t = self.memory.contents()
        g = torch.Generator(device=x.device).manual_seed(self.seed * 1_000_003 + exp.index)
        model.train()
        with torch.enable_grad():
            for _ in range(self.epochs):
                order = torch.randperm(len(y), generator=g, device=x.device)
                for i in range(0, len(y), self.batch_size):
                    idx = order[i: i + self.batch_size]
                    loss = module.objective.loss(model(x[idx], t[idx]), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        self.learned = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def _fresh(self, module: Any) -> nn.Module:
        """A copy of the module's model with its initial weights."""
        model = copy.deepcopy(module.model)
        model.load_state_dict(self.initial)
        return model

    def eval_model(self, module: Any) -> nn.Module | None:
        if self.learned is None:
            return None  # nothing learned yet: the module's model, still at its initial weights
        if self._model is None:
            self._model = self._fresh(module)
        self._model.load_state_dict(self.learned)
        return self._model

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(), "initial": self.initial, "learned": self.learned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.initial, self.learned = state["initial"], state["learned"]
