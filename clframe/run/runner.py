"""Build a run from a validated config, train over the stream, write the results."""

from __future__ import annotations

import logging
import os
import platform
import signal
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

import clframe
from clframe.checkpoint.checkpointer import Checkpointer, StopRequest
from clframe.checkpoint.resume import Resume, check_model, fit_to_checkpoint, for_rank, resolve
from clframe.config import validate
from clframe.config.registry import BACKBONES, HEADS, HYPERNETS, SCENARIOS, STRATEGIES
from clframe.config.trust import from_file
from clframe.core.module import CLModule
from clframe.data.curriculum import CurriculumIterator, check_curriculum_run
from clframe.data.iterator import StreamIterator
from clframe.data.stream import Scenario
from clframe.errors import ConfigError, DivergenceError, RunInterrupted, writing
from clframe.evaluation.curve import Curve
from clframe.evaluation.curve_metrics import curve_summary
from clframe.evaluation.metrics import summary_metrics
from clframe.evaluation.plots import plot_acc_matrix, plot_curves
from clframe.models.hypernets.target import Model
from clframe.monitors.continual import ContinualEvaluator
from clframe.monitors.diagnostics import BackboneDiagnostics, has_diagnostics, plot_timescales
from clframe.monitors.fewshot import fewshot_summary
from clframe.monitors.fits import is_1d_regression, plot_fits
from clframe.monitors.hypernet import HypernetReport
from clframe.monitors.online import OnlineMonitor
from clframe.monitors.plasticity import PlasticityMonitor
from clframe.monitors.plasticity.report import plasticity_summary, plot_plasticity
from clframe.run.checks import check_head, check_scenario, check_structure
from clframe.run.distributed import is_main_rank
from clframe.run.progress import StreamProgressBar, progress_metrics
from clframe.run.records import RunRecorder, make_wandb_logger


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
    if world > 1 and trainer["engine"] == "fabric":
        raise ConfigError("trainer.engine=fabric runs one process; use trainer.engine=trainer for "
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


def _split_name(node: dict[str, Any], default: str | None = None) -> tuple[str, dict[str, Any]]:
    params = dict(node)
    return params.pop("name", default), params


@dataclass
class Built:
    """Everything a run trains: the scenario, the module, and the batch iterator."""

    config: dict[str, Any]
    scenario: Scenario
    module: CLModule
    loader: StreamIterator | CurriculumIterator
    evaluator: ContinualEvaluator | None = None
    monitor: PlasticityMonitor | None = None
    diagnostics: BackboneDiagnostics | None = None
    hypernet_report: HypernetReport | None = None
    online: OnlineMonitor | None = None


def build(cfg: Any) -> Built:
    """Validate ``cfg`` and build scenario, model, strategies and module (nothing trains)."""
    c = validate(cfg)
    tr = c["train"]
    rank, world = processes(c["trainer"])
    L.seed_everything(c["seed"], workers=False, verbose=False)
    if tr["num_threads"]:
        torch.set_num_threads(tr["num_threads"])
    scenario = SCENARIOS.build(*_split_name(c["scenario"]))
    check_structure(scenario, c["scenario"]["name"])
    check_scenario(scenario)
    device = device_for(c["trainer"]["accelerator"])
    scenario.to(device)
    backbone = BACKBONES.build(*_split_name(c["backbone"]), input_shape=scenario.input_shape)
    if not isinstance(getattr(backbone, "out_features", None), int):
        raise ConfigError(f"backbone '{c['backbone']['name']}' must set self.out_features (an int: the size of the "
                          "features it returns, which sizes the head); it has "
                          f"{getattr(backbone, 'out_features', 'none')!r}.")
    if tr["freeze_backbone"]:
        backbone.requires_grad_(False)  # a fixed feature map: only the head learns
    head = HEADS.build(*_split_name(c["head"]), in_features=backbone.out_features,
                       n_classes=scenario.n_classes, n_tasks=scenario.n_tasks)
    hypernet = None if c["hypernet"] is None else HYPERNETS.build(
        *_split_name(c["hypernet"]), target=Model(backbone, head), n_tasks=scenario.n_tasks,
        n_classes=scenario.n_classes)
    strategies = {key: STRATEGIES.build(*_split_name(node, key), config_key=f"strategies.{key}")
                  for key, node in c["strategies"].items()}
    curriculum = scenario.curriculum
    if curriculum is not None:
        check_curriculum_run(world, c["eval"]["every"], scenario.n_tasks, head)
        loader = CurriculumIterator(curriculum, tr["batch_size"], device, seed=c["seed"])
    else:
        split = c["trainer"]["split_across_ranks"]
        if split and tr["batch_size"] < world:
            raise ConfigError(f"train.batch_size={tr['batch_size']} is the global batch and cannot be shared by "
                              f"{world} processes; set it to at least {world}, or trainer.split_across_ranks=false "
                              "for a batch of train.batch_size per process.")
        loader = StreamIterator(scenario.stream, tr["batch_size"] * (1 if split else world), tr["epochs"],
                                seed=c["seed"], shuffle=not scenario.stream.ordered, rank=rank, world_size=world)
    module = CLModule(
        backbone, head, strategies, scenario.stream, loader.steps_per_experience(),
        optimizer=tr["optimizer"], lr=tr["lr"], momentum=tr["momentum"], nesterov=tr["nesterov"],
        weight_decay=tr["weight_decay"], clip_norm=tr["clip_norm"], reset_optimizer=tr["reset_optimizer"],
        eval_batch_size=c["eval"]["batch_size"], log_every=c["logger"]["log_every"], objective=scenario.objective,
        hypernet=hypernet, split_across_ranks=c["trainer"]["split_across_ranks"],
    )
    check_head(module, scenario)
    ev = c["eval"]
    evaluator = ContinualEvaluator(ev["every"], ev["subset"], ev["on"], ev["batch_size"], seed=c["seed"]) \
        if ev["every"] is not None else None
    if curriculum is not None:
        evaluator.observers.append(curriculum.observe)
    monitor = PlasticityMonitor(ev["plasticity_every"], ev["plasticity_probe"]) if ev["plasticity"] else None
    online = OnlineMonitor(ev["online_window"], ev["ece_bins"]) if ev["online"] else None
    diagnostics = BackboneDiagnostics() if has_diagnostics(backbone) else None
    if diagnostics is not None:
        diagnostics.record(module, "initial")
        module.listeners.append(diagnostics)
    report = None
    if hypernet is not None:
        report = HypernetReport(c["eval"]["batch_size"])
        module.listeners.append(report)
    return Built(c, scenario, module, loader, evaluator, monitor, diagnostics, report, online)


def fit(built: Built, extra_callbacks: list | None = None) -> None:
    """Train ``built.module`` over the whole stream with the configured engine.

    Args:
        built: what ``build`` returned.
        extra_callbacks: Lightning callbacks run after the continual evaluator and the monitors
            (default None).
    """
    tn, progress = built.config["trainer"], built.config["logger"]["progress"]
    callbacks = [cb for cb in (built.evaluator, built.monitor, built.online) if cb is not None] + \
        list(extra_callbacks or [])
    if tn["engine"] == "fabric":
        fit_fabric(built.module, built.loader, tn["accelerator"], progress, callbacks)
        return
    trainer = L.Trainer(
        accelerator=tn["accelerator"], devices=tn["devices"], strategy=tn["strategy"], num_nodes=tn["num_nodes"],
        max_epochs=1, logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=progress, callbacks=callbacks + ([StreamProgressBar()] if progress else []),
        num_sanity_val_steps=0, use_distributed_sampler=False,
    )
    trainer.fit(built.module, train_dataloaders=built.loader)


def fit_fabric(
    module: CLModule, loader: StreamIterator | CurriculumIterator, accelerator: str, progress: bool = True,
    callbacks: list | None = None
) -> None:
    """Lightning Fabric drives the module's own ``training_step``: the same step as under
    ``Trainer.fit`` without the Trainer's per-step machinery (single device). Lightning
    callbacks get ``on_train_start``, ``on_train_batch_end`` and ``on_train_end`` with
    ``trainer=None``."""
    from lightning.fabric import Fabric
    from tqdm.auto import tqdm

    fabric = Fabric(accelerator=accelerator, devices=1)
    optimizer = module.configure_optimizers()
    if optimizer is None:  # nothing trainable (a frozen backbone under a head that learns by itself)
        fabric.setup(module)
    else:
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


def run(cfg: Any, run_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Validate, build, train and record one run; return its summary.

    With ``resume`` set, the run continues from its last checkpoint in the resumed run's
    directory instead of ``run_dir``. SIGTERM/SIGINT stop it at the end of the step with a
    checkpoint (``RunInterrupted``); a NaN/inf loss or parameter stops it with
    ``DivergenceError`` naming the last good checkpoint.

    Args:
        cfg: a composed config (``DictConfig`` or plain dict).
        run_dir: where config.yaml, metrics.csv, summary.json and checkpoints/ go.
        overrides: the command-line overrides that composed ``cfg`` (default None: ``cfg`` is
            taken whole); with ``resume``, settings they do not touch come from the checkpoint.
    """
    quiet()
    start = time.perf_counter()
    c = validate(cfg)
    resume = resolve(c, overrides)
    trust = nullcontext()
    if resume is not None:
        if not c["resume_trust"]:  # the checkpoint's config may name only what this invocation or clframe does
            trust = from_file(f"checkpoint {resume.path}", resume.config, [c, overrides],
                              "give it on the command line ({key}={path}, with that component's other settings) or "
                              "add resume_trust=true")
        c, run_dir = resume.config, resume.run_dir  # the process layout too comes from the resumed run
        resume = for_rank(resume, *processes(c["trainer"]))
        if is_main_rank():
            print(f"Resuming {run_dir} from {resume.path.name} (step {resume.state['step']}).")
    with trust:
        built = build(c)
    c, module, run_dir = built.config, built.module, Path(run_dir)
    main = is_main_rank()
    recorder = None
    if main:
        wandb_id = (resume.state["recorder"] or {}).get("wandb_id") if resume is not None else None
        wandb_logger = make_wandb_logger(run_dir, c, wandb_id) if c["logger"]["wandb"] else None
        recorder = RunRecorder(run_dir, c, wandb_logger)
        module.listeners.append(recorder)
        if built.diagnostics is not None:
            built.diagnostics.wandb = wandb_logger
        if built.online is not None:
            built.online.wandb = wandb_logger
    ck = c["checkpoint"]
    stop = StopRequest()
    checkpointer = Checkpointer(run_dir, c, ck["every"], ck["at_experience_end"], ck["keep"], built.evaluator,
                                recorder, stop, enabled=ck["enabled"],
                                extra=stateful_extras(built))
    if resume is not None:
        restore(built, resume, recorder, checkpointer)
    fit_start = time.perf_counter()
    if not module.finished:
        try:
            with stop:
                fit(built, [checkpointer])
        except DivergenceError as e:
            last = checkpointer.last_path or (resume.path if resume is not None else None)
            hint = f"The last good checkpoint is {last}." if last else "No checkpoint was written before it."
            raise DivergenceError(f"{e} {hint} Lower the learning rate or check the data; nothing was trained "
                                  "past it.") from None
        except (RunInterrupted, SIGTERMException) as e:
            if recorder is not None:
                recorder.write_metrics()
            if isinstance(e, RunInterrupted):
                raise
            raise RunInterrupted(stop.signum or signal.SIGTERM, str(checkpointer.last_path),
                                 str(run_dir)) from None
    fit_time = time.perf_counter() - fit_start
    if not main:
        return {}
    curve = built.evaluator.curve(module) if built.evaluator is not None else boundary_curve(module)
    if built.online is not None:
        built.online.finish(module)  # a finished run loaded from its checkpoint still has its last window open
    with writing(run_dir):  # a full disk or a read-only directory: one line naming the file
        summary = make_summary(built, curve, fit_time, time.perf_counter() - start, run_dir, checkpointer, resume)
        title = f"{c['experiment_name']} | {'+'.join(c['strategies']) or 'naive'} | seed {c['seed']}"
        score = module.objective.score_name
        figures = [plot_curves(curve, run_dir / "plots" / "accuracy_curves.png", title, score),
                   plot_acc_matrix(module.acc_matrix, run_dir / "plots" / "acc_matrix.png", title, score)]
        if built.diagnostics is not None:
            built.diagnostics.write(run_dir)
            fig = plot_timescales(built.diagnostics, module.boundaries, run_dir / "plots" / "timescales.png", title)
            figures += [fig] if fig is not None else []
        if is_1d_regression(built.scenario):
            figures.append(plot_fits(module, built.scenario.stream, run_dir / "plots" / "fits.png", title))
        if built.monitor is not None:
            figures.append(plot_plasticity(built.monitor.rows, summary["task_end_acc"],
                                           run_dir / "plots" / "plasticity.png", title))
        if built.online is not None:
            built.online.write(run_dir)
            fig = built.online.plot(module.boundaries, run_dir / "plots" / "online.png", title)
            figures += [fig] if fig is not None else []
        recorder.write_summary(summary, figures)
    return summary


def stateful_extras(built: Built) -> dict[str, Any]:
    """Parts of a run besides the module that checkpoints carry: the monitors, a curriculum."""
    parts = {"plasticity": built.monitor, "curriculum": built.scenario.curriculum, "diagnostics": built.diagnostics,
             "hypernet": built.hypernet_report, "online": built.online}
    return {k: v for k, v in parts.items() if v is not None}


def restore(built: Built, resume: Resume, recorder: RunRecorder | None, checkpointer: Checkpointer) -> None:
    """Put a freshly built run at the checkpoint's position: the stream, the evaluator's curve and
    the recorder's rows now; the module, strategies and RNGs when training starts (the optimizer
    exists only then). A finished run is restored at once and only its summary is written again."""
    state = resume.state
    fit_to_checkpoint(built.module, resume)
    check_model(resume, built.module.state_dict())
    if built.evaluator is not None and state["evaluator"] is not None:
        built.evaluator.load_state_dict(state["evaluator"])
    if recorder is not None and state["recorder"] is not None:
        recorder.load_state_dict(state["recorder"])
    for key, part in stateful_extras(built).items():
        if key in state.get("extra", {}):
            part.load_state_dict(state["extra"][key])
    if state["finished"]:
        print(f"{resume.run_dir} had already finished; writing its summary again.")
        built.module.load_training_state(state["module"])
        return
    built.loader.seek(state["step"])
    built.module.resuming = True
    checkpointer.resume_state = state


def make_summary(built: Built, curve: Curve, fit_time: float, wall_time: float, run_dir: Path,
                 checkpointer: Checkpointer, resume: Resume | None) -> dict[str, Any]:
    """The run's ``summary.json``: final metrics, curve metrics, throughput, checkpoints, versions."""
    c, module, ev = built.config, built.module, built.config["eval"]
    last = checkpointer.last_path
    return {
        "experiment_name": c["experiment_name"],
        "strategies": list(c["strategies"]),
        "scenario": built.scenario.name,
        "seed": c["seed"],
        "objective": module.objective.name,
        "score": module.objective.score_name,  # what acc_matrix and the accuracy metrics hold
        "acc_matrix": module.acc_matrix,
        **summary_metrics(module.acc_matrix, module.initial_accs),
        **curve_summary(curve, windows=(10, 100), beta=ev["lca_beta"], gap_window=ev["gap_window"]),
        "curve_source": "continual" if built.evaluator is not None else "boundary",
        **(plasticity_summary(built.monitor.rows, module.acc_matrix) if built.monitor is not None else {}),
        **(built.diagnostics.summary() if built.diagnostics is not None else {}),
        **({"hypernet": built.hypernet_report.summary(module)} if built.hypernet_report is not None else {}),
        **({"online": built.online.summary()} if built.online is not None else {}),
        **(fewshot_summary(module, built.scenario.stream, ev["batch_size"])
           if built.scenario.stream[0].info.get("in_context") else {}),
        **({"curriculum": built.scenario.curriculum.summary([e.info.get("N", e.index) for e in built.scenario.stream])}
           if built.scenario.curriculum is not None else {}),
        "final_accs": module.acc_matrix[-1],
        "initial_accs": module.initial_accs,
        "final_losses": module.loss_log[-1] if module.loss_log else {},
        "steps": module.cl_step,
        "samples": module.samples_all_ranks or module.samples_seen,  # stream samples trained on, all ranks
        "world_size": built.loader.world_size,
        "rank_weight_max_abs_diff": module.rank_weight_diff,
        "train_time_s": fit_time,
        "train_samples_per_s": (module.samples_all_ranks or module.samples_seen) / fit_time if fit_time > 0 else 0.0,
        "wall_time_s": wall_time,
        "checkpoint_save_s": float(np.mean(checkpointer.save_times)) if checkpointer.save_times else None,
        "checkpoint_mb": last.stat().st_size / 2**20 if last is not None and last.exists() else None,
        "resumed_from": None if resume is None else str(resume.path),
        "run_dir": str(run_dir),
        "versions": {"clframe": clframe.__version__, "torch": torch.__version__, "lightning": L.__version__,
                     "python": platform.python_version()},
    }


def boundary_curve(module: CLModule) -> Curve:
    """The curve of the boundary evaluations alone (before training, then each experience end)."""
    T = len(module.stream)
    return Curve([0, *module.boundaries], [-1, *range(len(module.boundaries))],
                 np.array([module.initial_accs, *module.acc_matrix]).reshape(-1, T), module.boundaries)
