"""The 1-D toy regression of von Oswald et al. 2020, "Continual learning with hypernetworks":
three polynomials on disjoint intervals, learned one after the other, task-incremental."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from annotated_types import Ge
from clframe.scenarios._common import tensor_data
from torch import Tensor

from clframe.config.registry import SCENARIOS, ParamError
from clframe.data.stream import Experience, Scenario, Stream


def _line(x: Tensor) -> Tensor:
    return x + 3


def _parabola(x: Tensor) -> Tensor:
    return 2 * x**2 - 1


def _cubic(x: Tensor) -> Tensor:
    return (x - 3) ** 3


TOY_TASKS: tuple[tuple[Callable[[Tensor], Tensor], tuple[float, float]], ...] = (
    (_line, (-4.0, -2.0)),  # task 0: y = x + 3 on [-4, -2]
    (_parabola, (-1.0, 1.0)),  # task 1: y = 2 x^2 - 1 on [-1, 1]
    (_cubic, (2.0, 4.0)),  # task 2: y = (x - 3)^3 on [2, 4]
)
"""The ground truth of each task, in stream order: (function, (low, high) of its input domain)."""


def toy_functions() -> list[tuple[Callable[[Tensor], Tensor], tuple[float, float]]]:
    """The (function, (low, high) domain) of each of the three tasks, in order, e.g. to plot the
    ground truths; each function maps inputs [N, 1] (or any shape) to targets of the same shape."""
    return list(TOY_TASKS)


@SCENARIOS.register("toy_regression")
def toy_regression(
    n_tasks: int = 3,
    n_train: Annotated[int, Ge(1)] = 100,
    n_eval: Annotated[int, Ge(1)] = 50,
    noise: Annotated[float, Ge(0)] = 0.05,
    seed: int = 0,
) -> Scenario:
    """The 1-D toy regression of von Oswald et al. 2020: task 0 is ``y = x + 3`` on ``[-4, -2]``,
    task 1 ``y = 2 x^2 - 1`` on ``[-1, 1]``, task 2 ``y = (x - 3)^3`` on ``[2, 4]``. Task-incremental:
    experience ``i`` has task label ``i`` (use a ``multihead`` head, or a strategy that reads the task
    label); inputs are [N, 1], targets [N, 1] float32, one output (``n_classes=1``). Training inputs
    are drawn uniformly from the task's domain, with Gaussian noise of std ``noise`` on the targets;
    eval inputs are ``n_eval`` evenly spaced points over the domain with noise-free targets (the
    reference measures the MSE against the ground truth). ``toy_functions()`` lists the ground truths.

    Args:
        n_tasks: how many of the three tasks, the first ``n_tasks`` in order, 1 to 3 (default 3).
        n_train: training samples per task (default 100).
        n_eval: eval samples per task (default 50).
        noise: std of the Gaussian noise added to the training targets (default 0.05).
        seed: seed of the training inputs and noise (default 0).
    """
    if not 1 <= n_tasks <= len(TOY_TASKS):
        raise ParamError("n_tasks", f"must be in [1, {len(TOY_TASKS)}], got {n_tasks}",
                         f"The toy has {len(TOY_TASKS)} tasks: set it to 1, 2 or 3.")
    if n_train < 1:
        raise ParamError("n_train", f"must be >= 1, got {n_train}", "Every task needs training samples.")
    if n_eval < 1:
        raise ParamError("n_eval", f"must be >= 1, got {n_eval}", "Every task needs eval samples.")
    if noise < 0:
        raise ParamError("noise", f"must be >= 0, got {noise}", "It is a standard deviation.")
    g = torch.Generator().manual_seed(seed)
    exps = []
    for i, (f, (lo, hi)) in enumerate(TOY_TASKS[:n_tasks]):
        x_train = torch.rand(n_train, 1, generator=g) * (hi - lo) + lo
        y_train = f(x_train) + noise * torch.randn(n_train, 1, generator=g)
        x_eval = torch.linspace(lo, hi, n_eval).unsqueeze(1)
        # classes_in_this_experience=[0]: the one output, which a multihead head must leave unmasked
        exps.append(Experience(i, tensor_data(x_train, y_train, i), tensor_data(x_eval, f(x_eval), i), [0],
                               task_label=i, info={"domain": (lo, hi)}))
    return Scenario(Stream(exps), n_classes=1, input_shape=(1,), n_tasks=n_tasks,
                    name=f"toy-regression ({n_tasks} tasks)", objective="regression")
