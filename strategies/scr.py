"""SCR: supervised contrastive replay with a nearest-class-mean classifier (Mai, Li, Kim & Sanner, 2021)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from clframe.strategies._augment import BatchAugment
from clframe.strategies._logit_buffer import check_replay_setup, draw
from clframe.strategies.icarl import NearestMeanOfExemplars
from torch import Tensor, nn

from clframe.config.registry import STRATEGIES, ParamError
from clframe.core.module import build_optimizer
from clframe.core.strategy import StepContext, Strategy
from clframe.data.batch import Batch
from clframe.data.buffers import ReservoirBuffer
from clframe.errors import ConfigError
from clframe.models.model import features_of
from clframe.run.distributed import all_reduce_sum, rank, world_size


def supcon_loss(z: Tensor, y: Tensor, temperature: float) -> Tensor:
    """The supervised contrastive loss (Khosla et al. 2020, L_out; SCR's Eq. 5) of L2-normalised
    embeddings ``z`` [N, D] with labels ``y`` [N]: the mean over anchors ``i`` of minus the mean over
    its positives ``p`` (same label, ``p != i``) of ``log(exp(z_i z_p / τ) / Σ_{a != i} exp(z_i z_a / τ))``.
    Every anchor needs a positive (here its other view). In float32 (under mixed precision too)."""
    z = z.float()
    with torch.autocast(z.device.type, enabled=False):  # autocast would run the product in 16 bits again
        sim = z @ z.T / temperature
    self_ = torch.eye(len(y), dtype=torch.bool, device=z.device)
    log_prob = sim - sim.masked_fill(self_, float("-inf")).logsumexp(1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~self_
    return -((log_prob * pos).sum(1) / pos.sum(1)).mean()


@STRATEGIES.register("scr")
class SCR(Strategy):
    """SCR: each step takes the incoming batch and ``batch_size_mem`` samples drawn (without replacement)
    from a reservoir memory, makes two views of their union (the samples and an augmented copy), maps both
    through the backbone and a projection head (Linear-ReLU-Linear to ``head_dim``, L2-normalised) and
    trains on the supervised contrastive loss alone (the ``scr`` term; the task loss is off: zero weights).
    The memory then takes the incoming samples by reservoir sampling. Evaluation classifies by the nearest
    class mean (``eval_model``) of the L2-normalised backbone features of the memory's samples, computed
    when evaluated. Task-free. The linear head is not trained: the online monitor's scores mean nothing.

    Mai, Li, Kim, Sanner, "Supervised Contrastive Replay: Revisiting the Nearest Class Mean Classifier in
    Online Class-Incremental Continual Learning", CVPR-W 2021. The paper's code, RaptorMai/online-continual-
    learning, was not available here: what is said of it is from memory (its README runs SCR with ``--temp
    0.07 --eps_mem_batch 100 --head mlp``). Checked against Avalanche 0.6 (``SCR``, ``SCRLoss``, ``SCRModel``,
    ``NCMClassifier``); where it departs from the paper, this follows the paper:
    - Avalanche's memory is class-balanced and takes a whole experience at its end; the paper's is a
      reservoir updated after every step.
    - Avalanche normalises the backbone features before the projection head; the paper's head takes them
      as they are and normalises its output.
    - Avalanche updates the class means at experience ends, averaged with the old ones (momentum 0.5); the
      paper computes them from the memory when it evaluates. Avalanche's SCR passes τ = 0.1; the paper 0.07.
    Other departures: classes absent from the memory are not predicted (the paper's code gives them a random
    mean); SupContrast's code scales the loss by ``τ / 0.07`` (1 at the default), Eq. 5 does not, nor this;
    no update before the memory holds a sample (the paper's code, too); no ``mem_iters``, no review trick;
    both views go through one forward pass (as Avalanche; the paper's code runs one a view: the same without
    batch-statistics layers such as BatchNorm). The augmentation (``BatchAugment``) is a batched random
    resized crop (area ``crop_scale``-1) and, with ``flip``, a horizontal flip; the paper's (CIFAR,
    torchvision) also jitters colour (0.4/0.4/0.4/0.1, p 0.8) and greys (p 0.2), moot on one channel.

    The head has an optimizer of its own, of the run's kind and settings (``optimizer``, ``lr``, ``momentum``,
    ``weight_decay``), stepped after the module's at its current learning-rate factor and cleared with it
    (``reset_optimizer``); ``clip_norm`` does not see it. It is not a param group of ``module.optimizer``
    because a resume restores that after matching its parameters to the module's by name
    (``refresh_optimizer_params``), and a head registered in the module would change the model's checkpoint
    keys. The head, its optimizer, the memory and the generators are in ``state_dict``.

    Args:
        mem_size: memory capacity in samples, at least 1 (default 200).
        batch_size_mem: samples drawn from the memory per step, at least 1 (default 100, the paper's).
        temperature: the contrastive loss's temperature τ, > 0 (default 0.07).
        head_dim: output size of the projection head, at least 1 (default 128, the paper's).
        crop_scale: the smallest crop's area, a fraction of the input's, in (0, 1] (default 0.2, the paper's).
        flip: flip the augmented view horizontally with probability 1/2 (default False: digits).
        seed: seed of the memory, the augmentation and the head's initial weights (default 0).

    Under multi-process training every rank keeps its own memory (seed ``seed + 7919 rank``); the head's
    gradients are averaged over the ranks. Refused on a regression objective, beside another strategy that
    rewrites the batch (``replay``, ``der``, ...), with labels per entry of a sequence, and with a hypernetwork
    on a stream of several tasks.
    """

    def __init__(self, mem_size: int = 200, batch_size_mem: int = 100, temperature: float = 0.07,
                 head_dim: int = 128, crop_scale: float = 0.2, flip: bool = False, seed: int = 0) -> None:
        defaults = {"mem_size": 200, "batch_size_mem": 100, "head_dim": 128}
        for name, value in (("mem_size", mem_size), ("batch_size_mem", batch_size_mem), ("head_dim", head_dim)):
            if value < 1:
                raise ParamError(name, f"must be >= 1, got {value}", f"Set it to a positive size (default "
                                 f"{defaults[name]}), or use strategy=naive to train without a memory.")
        if not temperature > 0:
            raise ParamError("temperature", f"must be > 0, got {temperature}: the similarities are divided by it",
                             "Set it to a small positive value (default 0.07).")
        if not 0 < crop_scale <= 1:
            raise ParamError("crop_scale", f"must be in (0, 1], got {crop_scale}: it is the smallest crop's share of "
                             "the input's area", "Use 1 for no crop, or e.g. 0.2 (default).")
        self.batch_size_mem, self.temperature, self.head_dim, self.seed = batch_size_mem, temperature, head_dim, seed
        self.buffer = ReservoirBuffer(mem_size, seed)
        self.augment = BatchAugment(crop_scale, flip, seed + 1)
        self.head: nn.Module | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.n_classes = 0
        self._hook: Any = None  # the backbone's forward hook, from before_forward to loss_terms
        self._features: Tensor | None = None  # what it caught

    def setup(self, module: Any) -> None:
        if module.objective.regression:
            raise ConfigError("strategy 'scr' pulls together the features of samples of one class and classifies by "
                              "class means, but this scenario's objective is regression. Use strategy=replay (or der, "
                              "derpp) for replay on a regression scenario.")
        if any(e.train.y.ndim > 1 for e in module.stream):
            raise ConfigError("strategy 'scr' contrasts one feature vector and one class label a sample, but this "
                              "scenario labels several entries of each sample (a sequence's steps). Use "
                              "strategy=er_ace or replay, or a scenario with one label a sample.")
        check_replay_setup(module, self)
        if world_size() > 1:  # a memory per rank, each with its own sampling stream
            self.buffer.seed += 7919 * rank()
            self.augment.seed += 7919 * rank()
        self.n_classes = 1 + max(c for e in module.stream for c in e.classes_in_this_experience)
        d = module.model.backbone.out_features
        with torch.random.fork_rng(devices=[]):  # the head's init neither uses nor moves the run's RNG
            torch.manual_seed(self.seed)
            self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, self.head_dim)).to(module.device)
        self.opt = build_optimizer(list(self.head.parameters()), **module.opt_cfg)

    def before_forward(self, batch: Batch, module: Any) -> Batch:
        if module.reset_optimizer and module.cl_step == module.exp_start_step:  # a new experience, seen or not
            self.opt.state.clear()
        n_in = len(batch) if batch.n_new is None else batch.n_new
        if self.buffer.size == 0:  # the first step: nothing to contrast with, nothing trained
            return Batch(batch.x, batch.y, batch.t, batch.exp, weight=torch.zeros(len(batch), device=batch.y.device),
                         n_new=n_in, shares=batch.shares)
        b, idx = self.buffer, draw(self.buffer, self.batch_size_mem)
        x, y, t = torch.cat([batch.x, b.x[idx]]), torch.cat([batch.y, b.y[idx]]), torch.cat([batch.t, b.t[idx]])
        if self._hook is not None:  # a step that raised before its loss
            self._hook.remove()
        self._hook = module.model.backbone.register_forward_hook(self._keep)
        return Batch(torch.cat([x, self.augment(x)]), torch.cat([y, y]), torch.cat([t, t]), batch.exp,
                     weight=x.new_zeros(2 * len(y), dtype=torch.float32), n_new=n_in, shares=batch.shares)

    def _keep(self, backbone: nn.Module, inputs: Any, out: Tensor) -> None:
        self._features = out

    def loss_terms(self, ctx: StepContext) -> dict[str, Tensor]:
        if self._hook is None:
            return {}
        self._hook.remove()
        self._hook, f, self._features = None, self._features, None
        z = F.normalize(self.head(f), dim=1)
        return {"scr": supcon_loss(z, ctx.batch.y, self.temperature)}

    def after_optimizer_step(self, ctx: StepContext) -> None:
        opt, world = ctx.module.optimizer, world_size()
        params = [p for p in self.head.parameters() if p.grad is not None]
        amp = ctx.module.precision
        amp.unscale_grads(params)  # 16-mixed: the head's gradients come scaled; the module's step may be skipped
        if params and not amp.skipped:  # at the module's learning-rate factor (lr_factor strategies), as applied
            factor = 1.0 if opt is None else opt.param_groups[0]["lr"] / opt.param_groups[0]["initial_lr"]
            for p in params if world > 1 else []:
                p.grad = all_reduce_sum(p.grad) / world
            self.opt.param_groups[0]["lr"] = ctx.module.opt_cfg["lr"] * factor
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        new = ctx.batch.new_samples()
        self.buffer.add(new.x, new.y, new.t)

    @torch.no_grad()
    def eval_model(self, module: Any) -> nn.Module | None:
        if self.buffer.size == 0:
            return None
        backbone, was_training = module.model.backbone, module.model.backbone.training
        backbone.eval()
        x, y, _ = self.buffer.contents()
        f = F.normalize(features_of(module.model, x), dim=1)
        backbone.train(was_training)
        # the normalised sum of each class's features is its normalised mean
        means = F.normalize(f.new_zeros(self.n_classes, f.shape[1]).index_add_(0, y, f), dim=1)
        seen = torch.zeros(self.n_classes, dtype=torch.bool, device=y.device).index_fill_(0, y, True)
        return NearestMeanOfExemplars(module.model, means, seen)

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict(), "augment": self.augment.state_dict(),
                "head": self.head.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # after setup, which built the head
        self.buffer.load_state_dict(state["buffer"])
        self.augment.load_state_dict(state["augment"], self.head[0].weight.device)
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["opt"])
