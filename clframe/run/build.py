"""Build a run from a validated config: the scenario, the model, the strategies, the monitors, the
module and the batch iterator. Nothing trains here."""

from __future__ import annotations

import logging
import os
import random
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clframe.config import validate
from clframe.config.registry import BACKBONES, HEADS, HYPERNETS, MONITORS, SCENARIOS, STRATEGIES
from clframe.core.module import CLModule
from clframe.core.monitor import Monitor, RunContext
from clframe.data.augment import ImageAugment
from clframe.data.curriculum import CurriculumIterator
from clframe.data.iterator import StreamIterator
from clframe.data.stream import Scenario
from clframe.errors import ConfigError
from clframe.models.model import Model
from clframe.models.preprocess import Normalize
from clframe.run.checks import check_head, check_scenario, check_structure


def quiet() -> None:
    """Silence dependency chatter (device banners, advice meant for other setups)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*does not have many workers.*", ".*GPU available but not used.*", ".*LeafSpec.*",
                    ".*TypedStorage is deprecated.*", ".*no QP solver.*", ".*treespec.*"):
        warnings.filterwarnings("ignore", message=pattern)


def device_for(accelerator: str) -> torch.device:
    """The torch device Lightning will use for ``accelerator`` in this process (its local rank's GPU)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accelerator} but CUDA is not available; "
                              "use trainer.accelerator=cpu.")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if accelerator in ("cpu", "auto"):
        return torch.device("cpu")
    raise ConfigError(f"trainer.accelerator must be cpu, gpu, cuda or auto, got '{accelerator}'.")


def processes(trainer: dict[str, Any]) -> tuple[int, int]:
    """``(rank, world_size)`` this process will have under the ``trainer:`` settings. Read from the
    environment Lightning's launcher sets, since the process group does not exist yet."""
    devices = trainer["devices"]
    if isinstance(devices, str) and not devices.isdigit():
        raise ConfigError(f"trainer.devices must be a number of devices, got '{devices}'.")
    world = int(devices) * trainer["num_nodes"]
    if world > 1 and trainer["engine"] in ("fabric", "loop"):
        raise ConfigError(f"trainer.engine={trainer['engine']} runs one process; use trainer.engine=trainer for "
                          f"trainer.devices={devices} trainer.num_nodes={trainer['num_nodes']}.")
    if world > 1 and trainer["strategy"] in ("single_device",):
        raise ConfigError(f"trainer.strategy={trainer['strategy']} runs one device; use trainer.strategy=ddp.")
    if world == 1:
        return 0, 1
    env = os.environ
    if "RANK" in env:
        rank = int(env["RANK"])
    elif "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", 0)) == world:  # Slurm started the processes
        rank = int(env["SLURM_PROCID"])
    else:  # Lightning's launcher: one process per device on each node
        rank = int(env.get("NODE_RANK", 0)) * int(devices) + int(env.get("LOCAL_RANK", 0))
    return rank, world


def engine(trainer: dict[str, Any]) -> str:
    """The engine ``trainer.engine`` names; ``auto`` is clframe's own loop for one process (the least
    per-step overhead, no Lightning import; see docs/performance.md) and ``Trainer.fit`` for several
    processes or a distributed strategy named for one."""
    if trainer["engine"] != "auto":
        return trainer["engine"]
    # a distributed strategy named for one device (e.g. to test DDP on one process) keeps the Trainer
    one = processes(trainer)[1] == 1 and trainer["strategy"] in ("auto", "single_device")
    return "loop" if one else "trainer"


def _split_name(node: dict[str, Any], default: str | None = None) -> tuple[str, dict[str, Any]]:
    params = dict(node)
    return params.pop("name", default), params


@dataclass
class Built:
    """Everything a run trains: the resolved config, the scenario, the module (with its model,
    strategies and monitors) and the batch iterator."""

    config: dict[str, Any]
    scenario: Scenario
    module: CLModule
    loader: StreamIterator | CurriculumIterator

    def monitor(self, key: str) -> Monitor | None:
        """The monitor configured under ``monitors.<key>``, if it takes part in this run."""
        return self.module.monitors.get(key)


def build_model(c: dict[str, Any], scenario: Scenario) -> Model:
    """The backbone and head of the config, and the hypernetwork that generates them if there is one."""
    tr = c["train"]
    backbone = BACKBONES.build(*_split_name(c["backbone"]), input_shape=scenario.input_shape)
    if not isinstance(getattr(backbone, "out_features", None), int):
        raise ConfigError(f"backbone '{c['backbone']['name']}' must set self.out_features (an int: the size of the "
                          "features it returns, which sizes the head); it has "
                          f"{getattr(backbone, 'out_features', 'none')!r}. The backbone contract: clframe.api, "
                          "docs/extending.md.")
    if tr["freeze_backbone"]:
        backbone.requires_grad_(False)  # a fixed feature map: only the head learns
    head = HEADS.build(*_split_name(c["head"]), in_features=backbone.out_features,
                       n_classes=scenario.n_classes, n_tasks=scenario.n_tasks)
    preprocess = None
    if scenario.image is not None:  # uint8 images: scaled and normalised inside the model
        preprocess = Normalize(scenario.image.mean, scenario.image.std, channels_last=tr["channels_last"])
    if tr["channels_last"]:
        backbone.to(memory_format=torch.channels_last)
    if tr["compile"]:
        backbone.compile()  # in place: parameter names and checkpoints unchanged
    model = Model(backbone, head, preprocess)
    if c["hypernet"] is None:
        return model
    return HYPERNETS.build(*_split_name(c["hypernet"]), target=model, n_tasks=scenario.n_tasks,
                           n_classes=scenario.n_classes)


def build_monitors(c: dict[str, Any], run: RunContext) -> dict[str, Monitor]:
    """The enabled monitors of ``monitors:`` that take part in this run, in config order."""
    out = {}
    for key, node in c["monitors"].items():
        params = dict(node)
        if not params.pop("enabled", True):
            continue
        monitor = MONITORS.build(*_split_name(params, key), config_key=f"monitors.{key}")
        if monitor.attach(run):
            out[key] = monitor
    return out


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) as Lightning's ``seed_everything`` does, without
    importing Lightning: a build (``clframe validate``) does not need it. ``PL_GLOBAL_SEED`` is set too,
    for the processes Lightning's launcher starts."""
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32), got {seed}.")
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(cfg: Any) -> Built:
    """Validate ``cfg`` and build scenario, model, strategies, monitors and module (nothing trains)."""
    c = validate(cfg)
    tr = c["train"]
    rank, world = processes(c["trainer"])
    seed_everything(c["seed"])
    if tr["num_threads"]:
        torch.set_num_threads(tr["num_threads"])
    scenario = SCENARIOS.build(*_split_name(c["scenario"]))  # scenario.boundaries=hidden: boundary_free
    check_structure(scenario, c["scenario"]["name"])
    check_scenario(scenario)
    device = device_for(c["trainer"]["accelerator"])
    scenario.to(device)
    model = build_model(c, scenario)
    strategies = {key: STRATEGIES.build(*_split_name(node, key), config_key=f"strategies.{key}")
                  for key, node in c["strategies"].items()}
    if scenario.curriculum is not None:
        loader = CurriculumIterator(scenario.curriculum, tr["batch_size"], device, seed=c["seed"])
    else:
        split = c["trainer"]["split_across_ranks"]
        if split and tr["batch_size"] < world:
            raise ConfigError(f"train.batch_size={tr['batch_size']} is the global batch and cannot be shared by "
                              f"{world} processes; set it to at least {world}, or trainer.split_across_ranks=false "
                              "for a batch of train.batch_size per process.")
        loader = StreamIterator(scenario.stream, tr["batch_size"] * (1 if split else world), tr["epochs"],
                                seed=c["seed"], shuffle=not scenario.stream.ordered, rank=rank, world_size=world)
    module = CLModule(
        model, strategies, scenario.stream, loader.steps_per_experience(),
        optimizer=tr["optimizer"], lr=tr["lr"], momentum=tr["momentum"], nesterov=tr["nesterov"],
        weight_decay=tr["weight_decay"], clip_norm=tr["clip_norm"], reset_optimizer=tr["reset_optimizer"],
        eval_batch_size=c["eval"]["batch_size"], log_every=c["logger"]["log_every"], objective=scenario.objective,
        split_across_ranks=c["trainer"]["split_across_ranks"],
        augment=ImageAugment.from_recipe(scenario.image) if scenario.image is not None and tr["augment"] else None,
        precision=c["trainer"]["precision"],
    )
    check_head(module, scenario)
    module.monitors = build_monitors(c, RunContext(c, scenario, module, world))
    module.set_plugins([])
    return Built(c, scenario, module, loader)
