"""Build a run from a validated config, train over the stream, write the results."""

from __future__ import annotations

import logging
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

import clframe
from clframe.config import validate
from clframe.data import StreamIterator
from clframe.errors import ConfigError
from clframe.evaluation.continual import ContinualEvaluator
from clframe.evaluation.curve import Curve
from clframe.evaluation.curve_metrics import curve_summary
from clframe.evaluation.metrics import summary_metrics
from clframe.evaluation.plots import plot_acc_matrix, plot_curves
from clframe.module import CLModule
from clframe.progress import StreamProgressBar, progress_metrics
from clframe.records import RunRecorder, make_wandb_logger
from clframe.registry import BACKBONES, HEADS, SCENARIOS, STRATEGIES
from clframe.stream import Scenario


def quiet() -> None:
    """Silence dependency chatter (device banners, advice meant for other setups)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (".*does not have many workers.*", ".*GPU available but not used.*", ".*LeafSpec.*",
                    ".*TypedStorage is deprecated.*", ".*no QP solver.*", ".*treespec.*"):
        warnings.filterwarnings("ignore", message=pattern)


def device_for(accelerator: str) -> torch.device:
    """The torch device Lightning will use for ``accelerator``."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.accelerator={accelerator} but CUDA is not available; use train.accelerator=cpu.")
        return torch.device("cuda")
    if accelerator in ("cpu", "auto"):
        return torch.device("cpu")
    raise ConfigError(f"train.accelerator must be cpu, gpu, cuda or auto, got '{accelerator}'.")


def _split_name(node: dict[str, Any], default: str | None = None) -> tuple[str, dict[str, Any]]:
    params = dict(node)
    return params.pop("name", default), params


@dataclass
class Built:
    """Everything a run trains: the scenario, the module, and the batch iterator."""

    config: dict[str, Any]
    scenario: Scenario
    module: CLModule
    loader: StreamIterator
    evaluator: ContinualEvaluator | None = None


def build(cfg: Any) -> Built:
    """Validate ``cfg`` and build scenario, model, strategies and module (nothing trains)."""
    c = validate(cfg)
    tr = c["train"]
    if tr["devices"] not in (1, "1"):
        raise ConfigError("train.devices must be 1: multi-device training is not supported yet.")
    L.seed_everything(c["seed"], workers=False, verbose=False)
    if tr["num_threads"]:
        torch.set_num_threads(tr["num_threads"])
    scenario = SCENARIOS.build(*_split_name(c["scenario"]))
    scenario.to(device_for(tr["accelerator"]))
    backbone = BACKBONES.build(*_split_name(c["backbone"]), input_shape=scenario.input_shape)
    head = HEADS.build(*_split_name(c["head"]), in_features=backbone.out_features,
                       n_classes=scenario.n_classes, n_tasks=scenario.n_tasks)
    strategies = {key: STRATEGIES.build(*_split_name(node, key)) for key, node in c["strategies"].items()}
    loader = StreamIterator(scenario.stream, tr["batch_size"], tr["epochs"], seed=c["seed"])
    module = CLModule(
        backbone, head, strategies, scenario.stream, loader.steps_per_experience(),
        optimizer=tr["optimizer"], lr=tr["lr"], momentum=tr["momentum"], weight_decay=tr["weight_decay"],
        reset_optimizer=tr["reset_optimizer"], eval_batch_size=c["eval"]["batch_size"],
        log_every=c["logger"]["log_every"],
    )
    ev = c["eval"]
    evaluator = ContinualEvaluator(ev["every"], ev["subset"], ev["on"], ev["batch_size"], seed=c["seed"]) \
        if ev["every"] > 0 else None
    return Built(c, scenario, module, loader, evaluator)


def fit(built: Built) -> None:
    """Train ``built.module`` over the whole stream with the configured engine."""
    tr, progress = built.config["train"], built.config["logger"]["progress"]
    callbacks = [built.evaluator] if built.evaluator is not None else []
    if tr["engine"] == "fabric":
        fit_fabric(built.module, built.loader, tr["accelerator"], progress, callbacks)
        return
    trainer = L.Trainer(
        accelerator=tr["accelerator"], devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=progress,
        callbacks=callbacks + ([StreamProgressBar()] if progress else []), num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    trainer.fit(built.module, train_dataloaders=built.loader)


def fit_fabric(
    module: CLModule, loader: StreamIterator, accelerator: str, progress: bool = True, callbacks: list | None = None
) -> None:
    """Lightning Fabric drives the module's own ``training_step``: the same step as under
    ``Trainer.fit`` without the Trainer's per-step machinery (single device). Lightning
    callbacks get ``on_train_start``, ``on_train_batch_end`` and ``on_train_end`` with
    ``trainer=None``."""
    from lightning.fabric import Fabric
    from tqdm.auto import tqdm

    fabric = Fabric(accelerator=accelerator, devices=1)
    optimizer = module.configure_optimizers()
    fabric.setup(module, optimizer)
    module.on_fit_start()
    callbacks = callbacks or []
    for cb in callbacks:
        cb.on_train_start(None, module)
    bar = tqdm(total=len(loader), desc="clframe", disable=not progress, mininterval=0.5)
    for i, batch in enumerate(loader):
        module.training_step(batch, i)
        for cb in callbacks:
            cb.on_train_batch_end(None, module, None, batch, i)
        if progress and (i + 1) % 10 == 0:
            bar.update(10)
            bar.set_postfix(progress_metrics(module), refresh=False)
    bar.close()
    module.on_train_epoch_end()
    for cb in callbacks:
        cb.on_train_end(None, module)


def run(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Validate, build, train and record one run; return its summary.

    Args:
        cfg: a composed config (``DictConfig`` or plain dict).
        run_dir: where config.yaml, metrics.csv and summary.json go.
    """
    quiet()
    start = time.perf_counter()
    built = build(cfg)
    c, module = built.config, built.module
    run_dir = Path(run_dir)
    wandb_logger = make_wandb_logger(run_dir, c) if c["logger"]["wandb"] else None
    recorder = RunRecorder(run_dir, c, wandb_logger)
    module.listeners.append(recorder)
    fit_start = time.perf_counter()
    fit(built)
    fit_time = time.perf_counter() - fit_start
    ev = c["eval"]
    curve = built.evaluator.curve(module) if built.evaluator is not None else boundary_curve(module)
    summary = {
        "experiment_name": c["experiment_name"],
        "strategies": list(c["strategies"]),
        "scenario": built.scenario.name,
        "seed": c["seed"],
        "acc_matrix": module.acc_matrix,
        **summary_metrics(module.acc_matrix, module.initial_accs),
        **curve_summary(curve, windows=(10, 100), beta=ev["lca_beta"], gap_window=ev["gap_window"]),
        "curve_source": "continual" if built.evaluator is not None else "boundary",
        "final_accs": module.acc_matrix[-1],
        "initial_accs": module.initial_accs,
        "final_losses": module.loss_log[-1] if module.loss_log else {},
        "steps": module.cl_step,
        "samples": module.samples_seen,
        "train_time_s": fit_time,
        "train_samples_per_s": module.samples_seen / fit_time if fit_time > 0 else 0.0,
        "wall_time_s": time.perf_counter() - start,
        "run_dir": str(run_dir),
        "versions": {"clframe": clframe.__version__, "torch": torch.__version__, "lightning": L.__version__,
                     "python": platform.python_version()},
    }
    title = f"{c['experiment_name']} | {'+'.join(c['strategies']) or 'naive'} | seed {c['seed']}"
    figures = [plot_curves(curve, run_dir / "plots" / "accuracy_curves.png", title),
               plot_acc_matrix(module.acc_matrix, run_dir / "plots" / "acc_matrix.png", title)]
    recorder.write_summary(summary, figures)
    return summary


def boundary_curve(module: CLModule) -> Curve:
    """The curve of the boundary evaluations alone (before training, then each experience end)."""
    T = len(module.stream)
    return Curve([0, *module.boundaries], [-1, *range(len(module.boundaries))],
                 np.array([module.initial_accs, *module.acc_matrix]).reshape(-1, T), module.boundaries)
