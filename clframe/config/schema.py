"""Config schema, composition and validation.

Components (scenario, backbone, head, hypernet, strategies, monitors) are checked against
their constructor signatures; the run settings (``train``, ``trainer``, ``checkpoint``,
``eval``, ``logger``) against the dataclasses below. Every error names the bad key, the valid keys and the closest
match, and is raised before anything is built.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from clframe.config.compat import renamed_message
from clframe.config.registry import REGISTRIES, boundaries_problem, check_params
from clframe.config.strategy_settings import apply as apply_strategy_settings
from clframe.config.trust import UntrustedConfigError
from clframe.config.typecheck import matches, type_name, violations
from clframe.errors import ConfigError, did_you_mean


@dataclass
class TrainConfig:
    """``train:`` settings.

    Args:
        epochs: passes over each experience (default 1).
        batch_size: samples per step, before replay adds any (default 32).
        optimizer: ``sgd``, ``adam`` or ``adamw`` (default ``sgd``).
        lr: learning rate (default 0.05).
        momentum: SGD momentum (default 0.0).
        nesterov: Nesterov momentum for SGD (needs momentum > 0) (default False).
        weight_decay: weight decay (default 0.0).
        clip_norm: clip the gradients' total norm to this before each step; null: no clipping
            (default null).
        reset_optimizer: clear optimizer state at each experience (default False).
        freeze_backbone: keep the backbone's weights fixed; only the head (and the strategies'
            own parameters) learn (default False).
        num_threads: torch CPU threads (default: torch's choice).
        augment: augment training batches (replayed samples too) on the device with the image
            dataset's recipe (``ImageRecipe``: random crop with padding, horizontal flip); no effect
            on scenarios without one (default True).
        channels_last: feed images to the model in ``torch.channels_last`` memory format, and lay its
            weights out so, for convolutions on a GPU's tensor cores (default False).
        compile: ``torch.compile`` the backbone (default False; the first steps compile it).
    """

    epochs: Annotated[int, Ge(1)] = 1
    batch_size: Annotated[int, Ge(1)] = 32
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: Annotated[float, Ge(0)] = 0.05
    momentum: Annotated[float, Ge(0)] = 0.0
    nesterov: bool = False
    weight_decay: Annotated[float, Ge(0)] = 0.0
    clip_norm: Annotated[float, Gt(0)] | None = None
    reset_optimizer: bool = False
    freeze_backbone: bool = False
    num_threads: Annotated[int, Ge(1)] | None = None
    augment: bool = True
    channels_last: bool = False
    compile: bool = False


@dataclass
class TrainerConfig:
    """``trainer:`` settings: where and how the steps run (Lightning's own engines).

    Args:
        accelerator: Lightning accelerator, ``cpu``, ``gpu``/``cuda`` or ``auto`` (default ``cpu``).
        devices: devices per node (default 1); more than one needs a distributed ``strategy``.
        strategy: Lightning strategy, e.g. ``auto``, ``ddp``, ``ddp_spawn`` (default ``auto``).
        num_nodes: machines (default 1).
        engine: ``auto``, ``loop``, ``fabric`` or ``trainer`` (default ``auto``). ``loop``: clframe's
            own loop drives the module's ``training_step`` (one process; the least per-step overhead,
            no Lightning import); ``fabric``: the same loop set up by Lightning Fabric (one process,
            Fabric's plugins); ``trainer``: Lightning ``Trainer.fit`` (several processes, DDP,
            Lightning callbacks); ``auto``: ``loop`` for one process, ``trainer`` for several.
        split_across_ranks: with several processes, ``train.batch_size`` and the strategies'
            sizes (replay's ``mem_size`` and ``batch_size_mem``) are global and split across the
            ranks, so the experiment is the one a single process runs, only faster; false: every
            rank takes ``train.batch_size`` samples per step and keeps a whole buffer, so the global
            batch and the memory grow with the ranks (default True).
        precision: ``32-true``, ``bf16-mixed`` or ``16-mixed``: mixed precision of the training step
            under every engine (``clframe.core.precision``); weights and strategy states stay
            float32 (default ``32-true``).
    """

    accelerator: str = "cpu"
    devices: Annotated[int, Ge(1)] | str = 1
    strategy: str = "auto"
    num_nodes: Annotated[int, Ge(1)] = 1
    engine: Literal["auto", "loop", "fabric", "trainer"] = "auto"
    split_across_ranks: bool = True
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"


@dataclass
class CheckpointConfig:
    """``checkpoint:`` settings. Checkpoints go to ``<run_dir>/checkpoints/``; a run resumes
    from the latest with ``resume=<run_dir>`` or ``resume=auto``.

    Args:
        enabled: write checkpoints at all (default True).
        every: also every this many optimizer steps; null: only at experience ends (default 500).
        at_experience_end: after each experience (default True).
        keep: most recent checkpoints kept on disk (default 2).
    """

    enabled: bool = True
    every: Annotated[int, Ge(1)] | None = 500
    at_experience_end: bool = True
    keep: Annotated[int, Ge(1)] = 2


@dataclass
class EvalConfig:
    """``eval:`` settings of the core evaluation. The accuracy matrix always comes from the full eval
    data of every experience at each experience end; the monitors (``monitors:``, e.g. the continual
    evaluator ``monitors.continual``) measure in between.

    Args:
        batch_size: samples per forward pass in evaluation (default 256: on a CPU, larger batches of a
            conv net fall out of the caches and run up to 1.7x slower; on a GPU raise it, e.g. 1024).
        gap_window: evaluations after a switch in which the stability-gap depth is sought (default 100).
        lca_beta: number of evaluations (beta) of the learning-curve area LCA (default 10).
        budget: the continual evaluator's time budget: its evaluations take at most this fraction of
            the training steps' time, in (0, 1], e.g. 0.2; it picks its period (at least
            ``monitors.continual.every``) from measured times, so which steps are evaluated depends on
            the machine. null: evaluate every ``monitors.continual.every`` steps (default null).
        metric: the summary metric a run returns to a sweeper that optimises it (Hydra's Optuna sweeper
            maximises it; ``clframe tune``) (default ``final_avg_acc``).
    """

    batch_size: Annotated[int, Ge(1)] = 256
    gap_window: Annotated[int, Ge(1)] = 100
    lca_beta: Annotated[int, Ge(1)] = 10
    budget: Annotated[float, Gt(0), Le(1)] | None = None
    metric: str = "final_avg_acc"


@dataclass
class LoggerConfig:
    """``logger:`` settings.

    Args:
        wandb: also log to Weights & Biases (offline unless ``WANDB_MODE`` says otherwise) (default False).
        project: wandb project (default ``clframe``).
        entity: wandb entity (default: the user's).
        group: wandb group; null: the experiment name, plus ``/<sweep_id>`` for the jobs of a sweep
            (default null).
        job_type: wandb job type; null: the strategy, e.g. ``replay+ewc`` (default null).
        tags: wandb tags added to the automatic ones (experiment, strategies, scenario, backbone) (default []).
        console: wandb console capture: ``wrap`` (stdout and stderr through Python), ``redirect`` (the file
            descriptors), ``auto`` or ``off`` (default ``wrap``).
        progress: show a progress bar (default True).
        log_every: steps between host syncs that log the loss terms (default 50).
    """

    wandb: bool = False
    project: str = "clframe"
    entity: str | None = None
    group: str | None = None
    job_type: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    console: Literal["wrap", "redirect", "auto", "off"] = "wrap"
    progress: bool = True
    log_every: Annotated[int, Ge(1)] = 50


SECTIONS = {"train": TrainConfig, "trainer": TrainerConfig, "eval": EvalConfig, "logger": LoggerConfig,
            "checkpoint": CheckpointConfig}
COMPONENT_KEYS = ("scenario", "backbone", "head", "hypernet", "strategies", "monitors")
TOP_KEYS = {"seed": int, "experiment_name": str, "resume": str, "resume_trust": bool, "scenario": dict,
            "backbone": dict, "head": dict, "hypernet": dict, "strategies": dict, "monitors": dict,
            "strategy_settings": dict, **{k: dict for k in SECTIONS}}
# how to switch off what a bound forbids, appended to its message
OFF_HINT = {"checkpoint.every": " For checkpoints at experience ends only, set checkpoint.every=null.",
            "train.clip_norm": " For no clipping, set train.clip_norm=null.",
            "eval.budget": " It is a fraction of the training time in (0, 1], e.g. 0.2; for fixed periods "
                           "(monitors.continual.every), set eval.budget=null."}


def _check_section(name: str, cls: type, values: Any, errors: list[str]) -> None:
    if not isinstance(values, dict):
        errors.append(f"'{name}' must be a mapping, got {values!r}.")
        return
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls, include_extras=True)  # keeps the Annotated bounds
    for k, v in values.items():
        if k not in fields:
            errors.append(renamed_message(f"{name}.{k}", v) or
                          f"Unknown key '{name}.{k}'.{did_you_mean(k, fields)} Valid keys: {', '.join(fields)}.")
        elif not matches(v, hints[k]):
            errors.append(f"'{name}.{k}' must be {type_name(hints[k])}, got {v!r} ({type(v).__name__}).")
        else:
            errors += [e + OFF_HINT.get(f"{name}.{k}", "") for e in violations(v, hints[k], f"{name}.{k}")]


def _check_train(train: Any, errors: list[str]) -> None:
    """Settings of ``train`` that depend on each other."""
    if not isinstance(train, dict):
        return
    momentum = train.get("momentum", 0.0)
    if train.get("nesterov") is True and isinstance(momentum, int | float) and momentum <= 0:
        errors.append(f"'train.nesterov' needs train.momentum > 0, got momentum={momentum!r}. Set train.momentum "
                      "(e.g. 0.1) or train.nesterov=false.")


def _check_component(kind: str, node: Any, errors: list[str], key: str | None = None) -> None:
    """Check one component's settings against its signature. ``key``: its name under ``strategies``
    or ``monitors`` (a monitor's node also takes ``enabled``)."""
    section = REGISTRIES[kind].key.split(".")[0]
    label = f"{section}.{key}" if key is not None else kind
    if not isinstance(node, dict):
        errors.append(f"'{label}' must be a mapping with a 'name', got {node!r}.")
        return
    params = dict(node)
    name = params.pop("name", key)
    if kind == "scenario":  # every scenario's (clframe.config.defaults.SCENARIO_COMMON), checked here
        from clframe.data.holdout import holdout_problem

        for problem in (boundaries_problem(params.pop("boundaries", "known")),
                        holdout_problem(params.pop("validation", 0.0), params.pop("first_experiences", None))):
            if problem is not None:
                errors.append(problem)
    if kind == "monitor" and not isinstance(params.pop("enabled", True), bool):
        errors.append(f"'{label}.enabled' must be true or false, got {node['enabled']!r}.")
    if name is None:
        errors.append(f"'{label}.name' is missing: which {kind}? Valid: {', '.join(REGISTRIES[kind].names())}.")
        return
    try:
        fn = REGISTRIES[kind].get(name)
        check_params(label, name, fn, params, REGISTRIES[kind].provided)
    except UntrustedConfigError:
        raise  # a refusal to run code is the one thing to say
    except ConfigError as e:
        errors.append(str(e))


def validate(cfg: DictConfig | dict) -> dict[str, Any]:
    """Check a composed config; return it as a resolved plain dict, or raise ``ConfigError``."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True) if isinstance(cfg, DictConfig) \
            else dict(cfg)
    except MissingMandatoryValue as e:
        raise ConfigError(f"'{e.full_key}' is missing (???): set it, e.g. {e.full_key}=<value>.") from e
    except Exception as e:  # e.g. a broken ${interpolation}
        raise ConfigError(f"Config cannot be resolved: {e}") from e
    plain.pop("hydra", None)
    errors: list[str] = []
    for k, v in plain.items():
        if k not in TOP_KEYS:
            errors.append(renamed_message(k, v) or
                          f"Unknown key '{k}'.{did_you_mean(k, TOP_KEYS)} Valid keys: {', '.join(TOP_KEYS)}.")
        elif k == "seed" and not matches(v, int):
            errors.append(f"'seed' must be int, got {v!r}.")
        elif k == "resume" and not matches(v, str | None):
            errors.append(f"'resume' must be a run directory, a checkpoint file or 'auto', got {v!r}.")
        elif k == "resume_trust" and not matches(v, bool):
            errors.append(f"'resume_trust' must be true or false, got {v!r}.")
    # settings for the runs that choose a strategy (clframe.config.strategy_settings): merged, then dropped
    apply_strategy_settings(plain, errors)
    for k, cls in SECTIONS.items():
        _check_section(k, cls, plain.get(k, {}), errors)
    _check_train(plain.get("train"), errors)
    for kind in ("scenario", "backbone", "head"):
        _check_component(kind, plain.get(kind), errors)
    if isinstance(plain.get("hypernet"), dict) and plain["hypernet"].get("name") == "none":
        plain["hypernet"] = None  # hypernet=none: its other settings (e.g. an experiment's) go unused
    if plain.get("hypernet") is not None:
        _check_component("hypernet", plain["hypernet"], errors)
    # named lists of components: strategies.<key> and monitors.<key>
    named = {"strategies": "strategy", "monitors": "monitor"}
    for section, kind in named.items():
        nodes = plain.get(section) or {}
        if not isinstance(nodes, dict):
            errors.append(f"'{section}' must be a mapping of name -> settings, got {nodes!r}.")
            continue
        for key, node in nodes.items():
            _check_component(kind, node if node is not None else {}, errors, key=key)
    if errors:
        # one problem fits on one line; several get a line each
        raise ConfigError("Invalid config: " + errors[0] if len(errors) == 1 else
                          "Invalid config:\n  - " + "\n  - ".join(errors))
    for k, cls in SECTIONS.items():
        plain[k] = dataclasses.asdict(cls(**plain.get(k, {})))
    for section in named:
        plain[section] = {k: v or {} for k, v in (plain.get(section) or {}).items()}
    plain.setdefault("resume", None)
    plain.setdefault("resume_trust", False)
    plain.setdefault("hypernet", None)
    return plain
