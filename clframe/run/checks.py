"""Checks of the built scenario and model, run once before any training step.

The config checks (``clframe.config.validate``) see only the config; these see what it
built: experiences without samples, labels outside the scenario's classes, a head with
fewer logits than the stream has classes. Each problem is a ``ConfigError`` that says
what is wrong, which config key to change and how.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from clframe.core.objectives import IGNORE, get_objective
from clframe.data.stream import Experience, Scenario, Stream, TensorData
from clframe.errors import ConfigError, warn


def _labels(y: torch.Tensor) -> torch.Tensor:
    return y if y.is_floating_point() else y.masked_fill(y == IGNORE, 0)


CONTRACT = ("A scenario builder returns clframe.api.Scenario(stream=Stream([Experience(index, "
            "train=TensorData(x, y, t), eval=TensorData(x, y, t), classes_in_this_experience=[...]), ...]), "
            "n_classes=..., input_shape=...) (the contract: clframe.api, docs/extending.md)")


def check_structure(scenario: Any, name: str, key: str = "scenario") -> None:
    """Raise ``ConfigError`` unless ``scenario`` is a ``Scenario`` whose stream is a ``Stream`` of
    ``Experience`` objects holding ``TensorData``: what a user's builder returned, checked before
    anything reads it.

    Args:
        scenario: what the builder returned.
        name: the builder's name or dotted path, for the message.
        key: the config key of the scenario's settings (default ``scenario``).
    """
    problem = None
    if not isinstance(scenario, Scenario):
        problem = f"returned {type(scenario).__name__}, not a Scenario"
    elif not isinstance(scenario.stream, Stream):
        problem = f"returned a Scenario whose stream is a {type(scenario.stream).__name__}, not a Stream"
    else:
        for i, e in enumerate(scenario.stream):
            if not isinstance(e, Experience):
                problem = f"returned a stream whose item {i} is a {type(e).__name__}, not an Experience"
            elif not (isinstance(e.train, TensorData) and isinstance(e.eval, TensorData)):
                problem = f"returned an experience {i} whose train/eval data are not TensorData"
            if problem:
                break
    if problem:
        raise ConfigError(f"scenario '{name}' under '{key}' {problem}. {CONTRACT}.")


def check_scenario(scenario: Scenario, key: str = "scenario") -> None:
    """Raise ``ConfigError`` unless every experience has training and eval samples whose inputs
    have the scenario's ``input_shape`` and are finite, whose labels are in ``[0, n_classes)`` and
    whose task labels are in ``[0, n_tasks)``. Every problem found is reported, one per line.
    Non-finite eval inputs get one warning per experience (the run goes on; those samples
    score as wrong and make the eval loss NaN).

    Args:
        scenario: the built scenario (``check_structure`` passed).
        key: the config key of the scenario's settings, for the messages (default ``scenario``).
    """
    where = f"scenario '{scenario.name}'" if scenario.name else "the scenario"
    regression = get_objective(scenario.objective).regression  # an unknown objective names the valid ones
    if len(scenario.stream) == 0:
        raise ConfigError(f"{where[0].upper()}{where[1:]} has no experiences. Change the settings under '{key}' so "
                          f"that it yields at least one (e.g. {key}.n_experiences >= 1).")
    errors = []
    for i, e in enumerate(scenario.stream):
        exp = f"Experience {i} of {where}"
        splits = [(split, data) for split, data in (("training", e.train), ("eval", e.eval)) if len(data)]
        for split in ("training", "eval"):
            if split not in dict(splits):
                errors.append(
                    f"{exp} has no {split} samples (classes {e.classes_in_this_experience}). Every experience needs "
                    f"training and eval samples: change the settings under '{key}' so that each experience gets "
                    f"some (e.g. fewer experiences with {key}.n_experiences, or only classes the dataset has in both "
                    "its train and test split), or fix the scenario's data."
                )
        for split, data in splits:
            if data.x.dtype == torch.uint8 and (scenario.image is None or data.x.dim() != 4):
                errors.append(
                    f"{exp} has uint8 {split} inputs of shape {list(data.x.shape[1:])} but no image recipe: the model "
                    f"would see raw bytes. Only scenarios that keep a dataset's images whole (split) pass uint8 images "
                    f"[N, C, H, W] on with their normalisation (Scenario.image); use scenario=split for this dataset, "
                    f"or give the scenario float inputs.")
                break
            if tuple(data.x.shape[1:]) != tuple(scenario.input_shape):
                errors.append(
                    f"{exp} has {split} inputs of shape {list(data.x.shape[1:])}, but the scenario declares "
                    f"input_shape={tuple(scenario.input_shape)} (the backbone is built for it). Fix the scenario "
                    f"under '{key}' so that every experience's inputs have one shape, its input_shape."
                )
        if not splits:
            continue
        if regression:
            errors += [_target_error(exp, split, d, scenario.n_classes, key) for split, d in splits
                       if not _targets_fit(d.y, scenario.n_classes)]
        # IGNORE marks unscored entries (padding steps of per-step labels); one host sync per experience
        ranges = torch.stack([torch.stack([_labels(d.y).min().float(), d.t.min().float(), d.y.max().float(),
                                           d.t.max().float(), _nonfinite(d.x)]) for _, d in splits]).long()
        lo, tlo = ranges[:, :2].min(0).values.tolist()
        hi, thi = ranges[:, 2:4].max(0).values.tolist()
        for (split, data), bad in zip(splits, ranges[:, 4].tolist()):
            if bad and split == "training":
                errors.append(f"{exp} has {bad} of {len(data)} training samples with NaN or infinite inputs: the loss "
                              f"would be NaN from the first batch that holds one. Clean the data of the scenario under "
                              f"'{key}' (e.g. drop or impute those samples).")
            elif bad:
                warn(f"{exp} has {bad} of {len(data)} eval samples with NaN or infinite inputs: they score as wrong "
                     "and make its eval loss NaN. Clean the scenario's eval data.")
        if not regression and (lo < 0 or hi >= scenario.n_classes):
            errors.append(
                f"{exp} has labels in [{lo}, {hi}], outside [0, {scenario.n_classes}): the scenario declares "
                f"n_classes={scenario.n_classes}, which sizes the head. Fix the scenario under '{key}': labels must "
                f"be >= 0 and n_classes at least the largest label + 1 ({max(hi + 1, 1)})."
            )
        if tlo < 0 or thi >= scenario.n_tasks:
            errors.append(
                f"{exp} has task labels in [{tlo}, {thi}], outside [0, {scenario.n_tasks}): the scenario declares "
                f"n_tasks={scenario.n_tasks}, which sizes a multi-head. Fix the scenario under '{key}': task labels "
                f"must be >= 0 and n_tasks at least the largest task label + 1 ({max(thi + 1, 1)})."
            )
    if errors:
        raise ConfigError("\n".join(errors))


def _nonfinite(x: Tensor) -> Tensor:
    """How many samples of ``x`` [N, ...] hold a NaN or infinite value (0 for integer inputs)."""
    if not x.is_floating_point():
        return x.new_zeros((), dtype=torch.float32)
    return (~torch.isfinite(x)).reshape(len(x), -1).any(1).sum().float()


def _targets_fit(y: Tensor, n_out: int) -> bool:
    """Regression targets are floats of shape [N, n_out], or [N] when ``n_out`` is 1."""
    return y.is_floating_point() and (tuple(y.shape[1:]) == (n_out,) or (y.ndim == 1 and n_out == 1))


def _target_error(exp: str, split: str, d: Any, n_out: int, key: str) -> str:
    return (f"{exp} has {split} targets of dtype {d.y.dtype} and shape {list(d.y.shape)}, but a regression "
            f"scenario with n_classes={n_out} outputs needs float targets of shape [N, {n_out}]"
            f"{' or [N]' if n_out == 1 else ''}. Fix the scenario under '{key}'.")


def check_head(module: nn.Module, scenario: Scenario, key: str = "head") -> None:
    """Raise ``ConfigError`` unless the model gives at least ``max label + 1`` logits per sample.

    One forward pass on one training sample of each experience (so every task label is
    seen), on the module's device, in eval mode, without gradients and with the RNG state
    restored: training afterwards is exactly what it would have been without the check.

    Args:
        module: the model, called as ``module(x, t)`` (a ``CLModule``, or any module with
            that signature; its ``head`` attribute, if any, names the head in messages).
        scenario: the built scenario (check it first with ``check_scenario``).
        key: the config key of the head's settings, for the messages (default ``head``).
    """
    samples = [e.train for e in scenario.stream if len(e.train)]
    if not samples:
        check_scenario(scenario)  # reports the empty experiences
        raise ConfigError("The scenario has no training samples.")
    regression = get_objective(scenario.objective).regression
    # a regression head needs exactly n_classes outputs (the target size); a classifier max label + 1
    max_label, max_exp = (scenario.n_classes - 1, 0) if regression else max(
        (int(d.y.max()), i) for i, e in enumerate(scenario.stream) for d in (e.train, e.eval) if len(d))
    head = getattr(module, "head", module)
    name = _component_name(head)
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    device = first.device if first is not None else samples[0].x.device
    x = torch.cat([d.x[:1].to(device) for d in samples])
    t = torch.cat([d.t[:1].to(device) for d in samples])
    with _untouched(module, device):
        try:
            logits = module(x, t)
        except Exception as e:  # a head or backbone that does not fit the data: say so before training
            raise ConfigError(
                f"The model (head '{name}' under '{key}') fails on one training sample per experience of "
                f"scenario '{scenario.name}' (inputs {list(x.shape)}, task labels {t.tolist()}): "
                f"{type(e).__name__}: {e}. Check that '{key}' and 'backbone' fit the scenario's inputs, "
                f"classes (n_classes={scenario.n_classes}) and tasks (n_tasks={scenario.n_tasks})."
            ) from e
    # labels [N] take logits [batch, classes]; labels per step [N, S] take [batch, S, classes]
    y = torch.cat([d.y[:1].to(device) for d in samples])
    steps = [] if regression or y.dim() == 1 else list(y.shape[1:])
    want = [len(x), *steps]
    if not isinstance(logits, Tensor) or logits.dim() != len(want) + 1 or list(logits.shape[:-1]) != want:
        got = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        shape = "[batch, classes]" if not steps else f"[batch, {steps[0]} (one per labelled step), classes]"
        raise ConfigError(f"head '{name}' under '{key}' must return logits of shape {shape}; for "
                          f"{len(x)} samples it returned {got}. Fix its forward"
                          + (", or the backbone's readout (readout=every for labels at every step)." if steps else "."))
    n_out = logits.shape[-1]
    if regression and n_out != scenario.n_classes:
        raise ConfigError(
            f"head '{name}' under '{key}' outputs {n_out} values per sample, but regression scenario "
            f"'{scenario.name}' has {scenario.n_classes}-dimensional targets. Fix '{key}': size the head from the "
            f"n_classes the framework passes it.")
    if n_out < max_label + 1:
        also = (f" (the scenario declares n_classes={scenario.n_classes}, also too few: fix it under 'scenario')"
                if scenario.n_classes < max_label + 1 else "")
        raise ConfigError(
            f"head '{name}' under '{key}' outputs {n_out} logits per sample, but the labels of scenario "
            f"'{scenario.name}' go up to {max_label} (experience {max_exp}), so it needs at least {max_label + 1} "
            f"(largest label + 1). Fix '{key}': size the head from the n_classes the framework passes it "
            f"(n_classes={scenario.n_classes}){also} instead of a fixed size, or set its size to at "
            f"least {max_label + 1}."
        )


@contextmanager
def _untouched(module: nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode, no gradients and a forked RNG (of the CPU and of ``device``); every submodule's
    train/eval mode comes back afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    module.eval()
    try:
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            yield
    finally:
        module.train(modes[0][1])
        for m, mode in modes:
            if m.training != mode:
                m.training = mode


def _component_name(obj: object) -> str:
    """The registered name of ``obj``'s class, else ``module:Class``."""
    cls = type(obj)
    return cls.__dict__.get("registry_name") or f"{cls.__module__}:{cls.__qualname__}"

