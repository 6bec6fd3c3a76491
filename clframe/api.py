"""The public API for plug-ins: everything a strategy, monitor, scenario, dataset, backbone, head or
hypernetwork of your own package imports, in one place (``from clframe.api import Strategy``).
These names keep their meaning across releases; the modules they live in may move. Importing this
module is cheap: torch and clframe's own base classes, no Lightning, Hydra or torchvision.

Every component's constructor signature is its config: typed keyword arguments with defaults
(``Annotated[float, Ge(0)]`` for ranges), no ``**kwargs``. clframe checks a config against it,
generates the config node from it and passes the arguments it supplies (below) itself.

**A scenario builder** (``SCENARIOS``, or ``scenario=custom scenario.name=pkg.mod:fn``) returns a
``Scenario``; anything else is a one-line ``ConfigError`` naming this contract:

- ``Scenario(stream, n_classes, input_shape, n_tasks=1, name="", objective="classification")``:
  ``n_classes`` is the label space (the head's output size), ``input_shape`` one sample's shape
  (e.g. ``(1, 28, 28)``, given to the backbone), ``n_tasks`` the number of task labels;
- ``stream`` is a ``Stream([Experience, ...])``, in training order;
- ``Experience(index, train, eval, classes_in_this_experience, task_label=0)``: its position, its
  training and evaluation samples, the class labels it holds, its task label;
- ``train`` and ``eval`` are ``TensorData(x, y, t)``, in memory: ``x`` inputs ``[N, *input_shape]``
  (float), ``y`` class labels ``[N]`` (int64, in ``[0, n_classes)``), ``t`` one task label per
  sample ``[N]`` (int64, in ``[0, n_tasks)``; zeros unless task-incremental).

A dataset loader (``DATASETS``) takes ``root`` and ``download`` and returns a ``Dataset`` (train and
test tensors, ``n_classes``); a missing file raises ``DatasetNotFoundError``.

**A backbone** (``BACKBONES``) gets ``input_shape`` (one sample's shape, from the scenario), must set
``self.out_features: int`` (the size of its features; it sizes the head), and maps
``forward(x) -> features [B, out_features]``: inputs only, no task labels.

**A head** (``HEADS``) gets ``in_features`` (the backbone's ``out_features``), ``n_classes`` and
``n_tasks``, and maps ``forward(h, t) -> logits [B, n_classes]`` from features ``h [B, in_features]``
and task labels ``t [B]``. The model is ``head(backbone(x), t)``. A hypernetwork (``HYPERNETS``) gets
that model as ``target`` with ``n_tasks`` and ``n_classes`` and is itself a ``Trainable``.
Optional behaviours (a head that learns by itself, per-task class masks, diagnostics, ...) are the
protocols below: a component gains one by having its methods.

**A strategy** (``STRATEGIES``) subclasses ``Strategy``: the events of ``Plugin`` (``setup``,
``on_experience_start``, ``before_optimizer_step``, ``after_optimizer_step``, ``on_step_end``,
``on_experience_end``, ``on_boundary_eval``, ``on_evaluation``, ``on_train_end``, ...) and the hooks
that feed the step (``before_forward(Batch, module) -> Batch``, ``loss_terms(StepContext)``,
``lr_factor``, ``configure_optimizer``, ``eval_model``); see their docstrings.

**A monitor** (``MONITORS``) subclasses ``Monitor``: the same events, plus ``attach(RunContext)``,
``summary``, ``write`` and the class method ``compare``; see ``Monitor``'s docstring. Both keep their
state on ``self`` and save it through ``state_dict``/``load_state_dict`` (tensors and plain containers).

A constructor that rejects a value of its own parameter raises ``ParamError``; any other bad input a
user can fix is a ``ConfigError`` with one line naming the problem and the fix.
"""

from __future__ import annotations

from clframe.config.registry import (
    BACKBONES,
    DATASETS,
    HEADS,
    HYPERNETS,
    MONITORS,
    SCENARIOS,
    STRATEGIES,
    ParamError,
)
from clframe.core.hooks import Plugin
from clframe.core.module import CLModule
from clframe.core.monitor import CompareOption, Monitor, ProvidesCurve, RunContext
from clframe.core.strategy import StepContext, Strategy
from clframe.data.batch import Batch
from clframe.data.datasets import Dataset
from clframe.data.stream import Experience, Scenario, Stream, TensorData
from clframe.errors import ConfigError, DatasetNotFoundError
from clframe.models.model import Trainable
from clframe.models.protocols import (
    GeneratesWeights,
    Grows,
    HasTimescales,
    KnowsObjective,
    LearnsOnline,
    MasksTaskClasses,
    ReportsDiagnostics,
    ResizesToCheckpoint,
    Silenceable,
    TaskConditioned,
)

__all__ = [
    # what a scenario builder returns, and what a dataset loader returns
    "Scenario", "Stream", "Experience", "TensorData", "Dataset",
    # the registries (decorate with @STRATEGIES.register("name"), or name an entry point in their group)
    "STRATEGIES", "MONITORS", "SCENARIOS", "DATASETS", "BACKBONES", "HEADS", "HYPERNETS",
    # strategies and monitors: the events, the bases and what their hooks receive
    "Plugin", "Strategy", "StepContext", "Batch", "CLModule", "Monitor", "RunContext", "CompareOption",
    "ProvidesCurve",
    # what a model is, and the capabilities its components may have
    "Trainable", "LearnsOnline", "KnowsObjective", "MasksTaskClasses", "TaskConditioned", "GeneratesWeights",
    "Grows", "ResizesToCheckpoint", "ReportsDiagnostics", "HasTimescales", "Silenceable",
    # errors a component raises for bad input
    "ConfigError", "ParamError", "DatasetNotFoundError",
]
