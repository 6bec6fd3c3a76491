"""CLModule: the model, the strategies and the monitors, trained over a whole stream in one fit."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from clframe.core.hooks import EVENTS, Plugin, overrides
from clframe.core.objectives import Objective, get_objective
from clframe.core.precision import Precision
from clframe.core.strategy import StepContext, Strategy, refuse_without_boundaries
from clframe.data.batch import Batch
from clframe.data.stream import Stream
from clframe.errors import DivergenceError
from clframe.evaluation.evaluate import evaluate_many, evaluation_mode
from clframe.models.model import Trainable
from clframe.models.protocols import GeneratesWeights, KnowsObjective, MasksTaskClasses, TaskConditioned
from clframe.run.distributed import all_reduce_sum, is_main_rank, max_diff_across_ranks, world_size

# Plain (non-tensor, non-module) attributes written every step. nn.Module.__setattr__ runs
# isinstance checks on each write; Lightning alone writes _current_fx_name ~28 times a step.
FAST_ATTRS = frozenset({"cl_step", "samples_seen", "_loss_steps", "_param_names", "precision", "augment"})
# the hooks that feed the training step, called on the strategies only
STRATEGY_HOOKS = ("before_forward", "loss_terms", "lr_factor")


def build_optimizer(
    params: list[nn.Parameter], name: str, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """``sgd`` (with ``momentum``, optionally ``nesterov``), ``adam`` or ``adamw`` over ``params``."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer '{name}' (sgd, adam, adamw)")


class CLModule(nn.Module):
    """A continual learner: a model, strategies hooked into its training step, and monitors.

    A plain ``nn.Module``: nothing here imports Lightning, so building and validating a run does not
    pay for it. The engines (``clframe.run.engines``) drive it: clframe's own loop or Lightning Fabric
    directly, Lightning's ``Trainer.fit`` through an adapter (``clframe.run.trainer_adapter``); Fabric
    and the Trainer set ``backward_loss``.

    The whole stream is one ``fit``: batches carry their experience index and the
    module sends the experience events when it changes. One batch is one optimizer step
    (manual optimization), the optimizer state persists across experiences unless
    ``reset_optimizer``, and ``cl_step`` (the global step) never restarts. Strategies, monitors
    and the run's recorder and checkpointer receive the same events (``clframe.core.hooks``)
    through ``emit``; the model's optional capabilities (``clframe.models.protocols``) are found
    on its modules.

    Args:
        model: what trains, ``clframe.models.model.Model`` (backbone + head) or a hypernetwork that
            generates one; its ``backbone`` and ``head`` are registered here under those names.
        strategies: name -> strategy, dispatched in this order.
        stream: the experiences (for experience events and boundary evaluation).
        steps_per_experience: optimizer steps of each experience (for ``lr_factor``).
        optimizer: ``sgd``, ``adam`` or ``adamw`` (default ``sgd``).
        lr: learning rate (default 0.05).
        momentum: SGD momentum (default 0.0).
        nesterov: Nesterov momentum for SGD (default False).
        weight_decay: weight decay (default 0.0).
        clip_norm: clip the gradients' total norm before each step, after the strategies'
            ``before_optimizer_step`` (default None: no clipping).
        reset_optimizer: clear the optimizer state at each new experience (default False).
        eval_batch_size: samples per forward pass in evaluation (default 256).
        log_every: steps between host syncs that log the loss terms and check them, and the
            parameters, for NaN/inf (default 50).
        objective: the scenario's objective, ``classification`` or ``regression`` (default
            ``classification``).
        monitors: name -> monitor, dispatched after the strategies (default none).
        split_across_ranks: under multi-process training, the batch (``Batch.shares``) and the
            strategies' sizes (replay's buffer and replay batch) are global, so the ranks together
            run the single-process experiment; strategies read this flag (default True).
        augment: applied to each training batch's inputs after every ``before_forward``, so replayed
            samples are augmented as the stream's are (e.g. ``clframe.data.augment.ImageAugment``);
            ``Batch.raw`` keeps the inputs before it (default None: no augmentation).
        precision: ``32-true``, ``bf16-mixed`` or ``16-mixed`` (default ``32-true``). Mixed precision
            autocasts the forward pass and the strategies' loss terms; the weights, gradients and
            every strategy's state stay float32. ``16-mixed`` scales the loss (``torch.amp.GradScaler``)
            and unscales the gradients before ``before_optimizer_step``, so strategies that read or
            project gradients see their true values; a step the scaler skips (inf/NaN gradients)
            reaches the strategies with zero gradients.
    """

    def __init__(
        self,
        model: Trainable,
        strategies: dict[str, Strategy],
        stream: Stream,
        steps_per_experience: list[int],
        optimizer: str = "sgd",
        lr: float = 0.05,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
        reset_optimizer: bool = False,
        eval_batch_size: int = 256,
        log_every: int = 50,
        objective: str = "classification",
        monitors: dict[str, Plugin] | None = None,
        split_across_ranks: bool = True,
        augment: Callable[[Tensor], Tensor] | None = None,
        precision: str = "32-true",
    ) -> None:
        super().__init__()
        # where the module lives (moves with .to()); not in the state dict, so checkpoints keep their keys
        self.register_buffer("_device_probe", torch.empty(0), persistent=False)
        # how the training step backpropagates: the engine's (Fabric's, Lightning's) or plain autograd
        self.backward_loss: Callable[[Tensor], None] = Tensor.backward
        self.objective: Objective = get_objective(objective)
        # registered under their own names: parameter names, checkpoint keys and diagnostics stay put
        self.backbone, self.head = model.backbone, model.head
        if isinstance(model, GeneratesWeights):
            self.hypernet = model
        if getattr(model, "preprocess", None) is not None:  # buffers only: no state-dict keys
            self.preprocess = model.preprocess
        object.__setattr__(self, "model", model)  # a view of the modules above, not registered twice
        self.strategies = strategies
        self.monitors = dict(monitors or {})
        self.stream = stream
        self.steps_per_experience = steps_per_experience
        self.opt_cfg = {"name": optimizer, "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                        "nesterov": nesterov}
        self.clip_norm = clip_norm
        self.reset_optimizer, self.eval_batch_size, self.log_every = reset_optimizer, eval_batch_size, log_every
        self.split_across_ranks = split_across_ranks
        self.augment = augment
        self.precision = Precision(precision)
        self.cl_step = 0
        self.current_exp = -1
        self.exp_ended = False
        self.resuming = False
        self.rank_weight_diff: float | None = None
        self.samples_all_ranks: int | None = None
        self.exp_start_step = 0
        self.samples_seen = 0
        self.acc_matrix: list[list[float]] = []
        self.initial_accs: list[float] = []
        self.boundaries: list[int] = []
        self.loss_log: list[dict[str, float]] = []
        # (step, experience, detached terms) of the steps since the last flush; read in one transfer
        self._loss_steps: list[tuple[int, int, dict[str, Tensor]]] = []
        self._optimizer: torch.optim.Optimizer | None = None
        self._param_names: dict[int, str] = {}
        self.log_sink: Callable[[dict[str, float], int], None] | None = None  # the run's logger (wandb)
        self.set_plugins([])
        self._configure_model(model)

    def _configure_model(self, model: nn.Module) -> None:
        """Tell the model's components what they may depend on: the objective, each task's classes."""
        # a task label shared by several experiences covers all of their classes
        task_classes: dict[int, set[int]] = {}
        for e in self.stream:
            task_classes.setdefault(e.task_label, set()).update(e.classes_in_this_experience)
        for m in model.modules():
            if isinstance(m, KnowsObjective):
                m.set_objective(self.objective.name)
        for m in model.modules():
            if isinstance(m, MasksTaskClasses):
                for task, classes in task_classes.items():
                    m.set_task_classes(task, sorted(classes))

    def set_plugins(self, run_plugins: Sequence[Plugin]) -> None:
        """The run's own plugins (recorder, checkpointer), dispatched after the strategies and the
        monitors; rebuilds the dispatch tables."""
        self.plugins: list[Plugin] = [*self.strategies.values(), *self.monitors.values(), *run_plugins]
        self._strategy_hooks = {h: [s for s in self.strategies.values() if overrides(s, h)] for h in STRATEGY_HOOKS}
        self._loss_providers = [(k, s) for k, s in self.strategies.items() if overrides(s, "loss_terms")]
        self._listeners = {e: [p for p in self.plugins if overrides(p, e)] for e in EVENTS}

    def emit(self, event: str, *args: Any) -> None:
        """Send ``event`` (one of ``clframe.core.hooks.EVENTS``) to every plugin that overrides it, in order."""
        for p in self._listeners[event]:
            getattr(p, event)(*args)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log scalars at ``step`` to the run's logger (wandb), if there is one."""
        if self.log_sink is not None:
            self.log_sink(metrics, step)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in FAST_ATTRS:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def device(self) -> torch.device:
        """The device the module's parameters and buffers are on."""
        return self._device_probe.device

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model(x, t)

    def configure_optimizers(self) -> torch.optim.Optimizer | None:
        params = [p for p in self.parameters() if p.requires_grad]
        self._param_names = {id(p): n for n, p in self.named_parameters()}
        if not params:  # e.g. a frozen backbone under a head that trains itself
            self._optimizer = None
            return None
        provided = [o for s in self.strategies.values() if (o := s.configure_optimizer(params)) is not None]
        if len(provided) > 1:
            raise ValueError("more than one strategy provides the optimizer")
        cfg = self.opt_cfg
        opt = provided[0] if provided else build_optimizer(params, **cfg)
        for g in opt.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self._optimizer = opt
        return opt

    def refresh_optimizer_params(self) -> None:
        """Point the optimizer at the module's current parameters after a strategy or a loaded
        checkpoint replaced some (e.g. a grown hypernetwork): each parameter is matched by name;
        the state of a replaced one is kept if its shape did not change, else dropped."""
        opt, current = self._optimizer, dict(self.named_parameters())
        if opt is None:
            return
        for g in opt.param_groups:
            for i, p in enumerate(g["params"]):
                new = current[self._param_names[id(p)]]
                if new is p:
                    continue
                state = opt.state.pop(p, None)
                if state is not None and all(not torch.is_tensor(v) or v.ndim == 0 or v.shape == new.shape
                                             for v in state.values()):
                    opt.state[new] = state
                g["params"][i] = new
        self._param_names = {id(p): n for n, p in current.items()}

    def on_fit_start(self) -> None:
        if self.stream.boundary_free:
            refuse_without_boundaries(self.strategies)
        for s in self.strategies.values():
            s.setup(self)
        if not self.resuming and is_main_rank():
            # the untrained model's accuracy on every experience: the baseline of forward transfer
            self.initial_accs = self._evaluate_all()[0]
        for p in self.plugins[len(self.strategies):]:  # the monitors, then the run's plugins (which restore a resume)
            p.setup(self)

    def on_train_end(self) -> None:
        self.emit("on_train_end", self)

    # -- experiences ---------------------------------------------------------
    def _set_active_task(self) -> None:
        task = self.stream[self.current_exp].task_label
        for m in self.model.modules():
            if isinstance(m, TaskConditioned):
                m.set_active_task(task)

    def _enter_experience(self, exp: int) -> None:
        while self.current_exp < exp:
            if self.current_exp >= 0 and not self.exp_ended:
                self._end_experience(self.current_exp)
            self.current_exp += 1
            self.exp_ended = False
            self.exp_start_step = self.cl_step
            if self.reset_optimizer and self._optimizer is not None:
                self._optimizer.state.clear()
            self._set_active_task()
            if not self.stream.boundary_free:
                with torch.enable_grad():
                    self.emit("on_experience_start", self.stream[self.current_exp], self)

    def _end_experience(self, exp: int) -> None:
        self.flush_losses()
        if not self.stream.boundary_free:
            with torch.enable_grad():
                self.emit("on_experience_end", self.stream[exp], self)
        self.boundaries.append(self.cl_step)
        self.exp_ended = True
        self.evaluate_boundary(exp)

    def on_train_epoch_end(self) -> None:
        # also enters trailing experiences that had no training batches, so every
        # experience gets its hooks and its row of the accuracy matrix
        self._enter_experience(len(self.stream) - 1)
        if not self.exp_ended:
            self._end_experience(self.current_exp)
        if world_size() > 1:
            self.rank_weight_diff = max_diff_across_ranks(self)
            self.samples_all_ranks = int(all_reduce_sum(torch.tensor([self.samples_seen], device=self.device)))

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer ``configure_optimizers`` made (None before it ran)."""
        return self._optimizer

    @property
    def finished(self) -> bool:
        """Every experience has been trained and ended."""
        return self.current_exp == len(self.stream) - 1 and self.exp_ended

    def eval_target(self) -> nn.Module:
        """The model evaluation uses: the first strategy's ``eval_model``, else this module."""
        for s in self.strategies.values():
            m = s.eval_model(self)
            if m is not None:
                return m
        return self

    def _evaluate_all(self) -> tuple[list[float], list[float]]:
        with evaluation_mode(self.eval_target()) as model:
            return evaluate_many(model, [e.eval for e in self.stream], self.eval_batch_size, self.objective)

    def evaluate_boundary(self, exp: int) -> list[float]:
        """Accuracy on every experience's full eval data after training on ``exp``; one matrix row.
        Under multi-process training only rank 0 evaluates (the weights are the same on every rank)."""
        accs, rows = [], []
        if is_main_rank():
            accs, losses = self._evaluate_all()
            self.acc_matrix.append(accs)
            rows = [
                {"step": self.cl_step, "experience": exp, "eval_experience": j, "acc": a, "loss": lo,
                 "kind": "boundary"}
                for j, (a, lo) in enumerate(zip(accs, losses))
            ]
        self.emit("on_boundary_eval", self, exp, rows)
        return accs

    # -- the training step ---------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> None:
        self._enter_experience(batch.exp)
        self.samples_seen += len(batch)
        for s in self._strategy_hooks["before_forward"]:
            batch = s.before_forward(batch, self)
        if self.augment is not None:  # the whole batch, replayed samples too; strategies store batch.raw
            batch = replace(batch, x=self.augment(batch.x), raw=batch.x)
        amp = self.precision
        with amp.autocast(self.device):
            logits, loss, loglik = self.model.step(batch.x, batch.y, batch.t, batch.weight, self.objective)
            ctx = StepContext(self, batch, logits, loss, self.cl_step, self.current_exp, loglik)
            terms = {"task": loss}
            for key, s in self._loss_providers:
                for name, term in s.loss_terms(ctx).items():
                    # two strategies may return the same name (e.g. two EWC instances): keep both
                    terms[f"{key}.{name}" if name in terms else name] = term
            total = loss if len(terms) == 1 else sum(terms.values())
        opt = self._optimizer
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        if total.requires_grad:  # not with a frozen backbone under a head that learns by itself
            self.backward_loss(amp.scale(total))
            amp.unscale(opt)
        self.emit("before_optimizer_step", ctx)
        if opt is not None:
            if self.clip_norm is not None:
                # on the device: no host sync
                nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self.clip_norm)
            if self._strategy_hooks["lr_factor"]:
                self._apply_lr_factor()
            amp.step(opt)
        self.model.after_update()
        self.cl_step += 1
        self.emit("after_optimizer_step", ctx)
        self._accumulate(terms)
        self.emit("on_step_end", ctx)

    def _apply_lr_factor(self) -> None:
        factor = 1.0
        args = (self.cl_step, self.current_exp, self.cl_step - self.exp_start_step,
                self.steps_per_experience[self.current_exp])
        for s in self._strategy_hooks["lr_factor"]:
            f = s.lr_factor(*args)
            factor *= 1.0 if f is None else f
        for g in self._optimizer.param_groups:
            g["lr"] = g["initial_lr"] * factor

    def _accumulate(self, terms: dict[str, Tensor]) -> None:
        # kept on the device; the host reads them only every log_every steps
        self._loss_steps.append((self.cl_step, self.current_exp, {k: v.detach() for k, v in terms.items()}))
        if len(self._loss_steps) >= self.log_every:
            self.flush_losses()

    def _read_losses(self) -> list[list[float]]:
        """The pending loss terms on the host (one transfer); raise ``DivergenceError`` if a term
        or a parameter is NaN or infinite."""
        params = [(n, p) for n, p in self.named_parameters()]
        flat = [v for _, _, terms in self._loss_steps for v in terms.values()]
        finite = [torch.isfinite(p.detach()).all() for _, p in params]
        parts = ([torch.stack(flat).float()] if flat else []) + ([torch.stack(finite).float()] if finite else [])
        values = torch.cat(parts).tolist() if parts else []
        rows, i = [], 0
        for step, exp, terms in self._loss_steps:
            row = values[i: i + len(terms)]
            i += len(terms)
            for name, v in zip(terms, row):
                if not math.isfinite(v):
                    raise DivergenceError(
                        f"Training diverged: loss term '{name}' was {v} at step {step} (experience {exp}).")
            rows.append(row)
        bad = [n for (n, _), ok in zip(params, values[i:]) if not ok]
        if bad:
            raise DivergenceError(f"Training diverged: parameter '{bad[0]}' is NaN or infinite at step "
                                  f"{self.cl_step} (experience {self.current_exp}).")
        return rows

    def check_finite(self) -> None:
        """Raise ``DivergenceError`` if a pending loss term or a parameter is not finite (one host
        sync; nothing is logged or reset)."""
        self._read_losses()

    def flush_losses(self) -> dict[str, float]:
        """Average the pending loss terms per name (one host sync), check them and the parameters
        for NaN/inf, log and reset them."""
        if not self._loss_steps:
            return {}
        rows = self._read_losses()
        sums: dict[str, list[float]] = {}
        for (_, _, terms), row in zip(self._loss_steps, rows):
            for name, v in zip(terms, row):
                sums.setdefault(name, []).append(v)
        out = {f"loss/{k}": sum(v) / len(v) for k, v in sums.items()}
        self._loss_steps = []
        self.loss_log.append({"step": self.cl_step, "experience": self.current_exp, **out})
        self.emit("on_losses", self, out)
        return out

    # -- checkpoints ---------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """Everything that continues this run exactly: weights, optimizer, strategies, counters,
        records and the pending loss terms (tensors and plain containers only)."""
        return {
            "model": self.state_dict(),
            "optimizer": None if self._optimizer is None else self._optimizer.state_dict(),
            "strategies": {k: s.state_dict() for k, s in self.strategies.items()},
            "counters": {"cl_step": self.cl_step, "current_exp": self.current_exp, "exp_ended": self.exp_ended,
                         "exp_start_step": self.exp_start_step, "samples_seen": self.samples_seen},
            "records": {"acc_matrix": self.acc_matrix, "initial_accs": self.initial_accs,
                        "boundaries": self.boundaries, "loss_log": self.loss_log},
            "pending_losses": self._loss_steps,
            "precision": self.precision.state_dict(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what ``training_state`` returned (call after the strategies' ``setup``)."""
        from clframe.checkpoint.files import to_device

        self.load_state_dict(state["model"])
        self.refresh_optimizer_params()  # a checkpoint may hold grown parameters
        if self._optimizer is not None and state["optimizer"] is not None:
            self._optimizer.load_state_dict(state["optimizer"])
        for k, s in self.strategies.items():
            s.load_state_dict(to_device(state["strategies"][k], self.device))
        for k, v in state["counters"].items():
            setattr(self, k, v)
        if self.current_exp >= 0:
            # which task's parameters train is not a weight: set it again for the experience resumed in
            self._set_active_task()
        for k, v in state["records"].items():
            setattr(self, k, v)
        self._loss_steps = [(s, e, to_device(t, self.device)) for s, e, t in state["pending_losses"]]
        self.precision.load_state_dict(state.get("precision", {}))  # absent in checkpoints before 0.3
