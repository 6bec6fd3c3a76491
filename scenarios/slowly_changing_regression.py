"""Slowly-changing regression (Dohare et al.'s bit-flipping problem): fully synthetic, boundary-free."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from annotated_types import Ge
from clframe.scenarios._common import check_streaming, tensor_data
from torch import Tensor

from clframe.config.registry import SCENARIOS
from clframe.data.stream import Experience, Scenario, Stream
from clframe.errors import ConfigError


class LTUTarget:
    """The fixed target network: ``n_inputs`` binary inputs -> ``n_features`` linear threshold units
    -> one linear output, every weight and bias drawn from {-1, +1}. Unit ``i`` fires (outputs 1)
    when its pre-activation exceeds ``tau_i = beta * (n_inputs + 1) - S_i``.

    ``S_i`` is computed as the reference code does, ``(n_inputs - sum_j w_ij + b_i) / 2``: the number
    of negative input weights, with the bias entering with a plus sign (the paper defines ``S_i`` as
    the number of negative input weights; we keep the code's form because its data is what the
    published curves were measured on).

    Args:
        n_inputs: input bits (default 20).
        n_features: LTU units (default 100).
        beta: threshold fraction (default 0.7).
        g: generator of the weights (default: the global one).
    """

    def __init__(self, n_inputs: int = 20, n_features: int = 100, beta: float = 0.7,
                 g: torch.Generator | None = None) -> None:
        def signs(*shape: int) -> Tensor:
            return torch.randint(0, 2, shape, generator=g).float() * 2 - 1

        self.w1, self.b1 = signs(n_features, n_inputs), signs(n_features)
        self.w2, self.b2 = signs(1, n_features), signs(1)
        s = (n_inputs - self.w1.sum(1) + self.b1) / 2
        self.tau = beta * (n_inputs + 1) - s

    def __call__(self, x: Tensor) -> Tensor:
        """Targets [N] of binary inputs ``x`` [N, n_inputs]."""
        features = (x @ self.w1.T + self.b1 > self.tau).float()
        return (features @ self.w2.T + self.b2).squeeze(-1)


def slow_bits(n_tasks: int, n_slow: int, variant: str, g: torch.Generator) -> Tensor:
    """[n_tasks, n_slow] settings of the slowly-changing bits: redrawn at random each task
    (``redraw``), or the previous task's with one random bit flipped (``flip_one``)."""
    bits = torch.randint(0, 2, (n_tasks, n_slow), generator=g).float()
    if variant == "flip_one" and n_slow > 0:
        flips = torch.randint(0, n_slow, (n_tasks,), generator=g)
        for i in range(1, n_tasks):  # once per task, not per sample
            bits[i] = bits[i - 1]
            bits[i, flips[i]] = 1 - bits[i, flips[i]]
    return bits


@SCENARIOS.register("slowly_changing_regression")
def slowly_changing_regression(
    n_tasks: Annotated[int, Ge(1)] = 100,
    steps_per_task: Annotated[int, Ge(1)] = 10000,
    n_inputs: Annotated[int, Ge(1)] = 20,
    n_slow: Annotated[int, Ge(0)] = 15,
    n_target_features: Annotated[int, Ge(1)] = 100,
    beta: float = 0.7,
    variant: Literal["redraw", "flip_one"] = "redraw",
    eval_samples: Annotated[int, Ge(1)] = 200,
    seed: int = 0,
) -> Scenario:
    """A regression stream over ``n_inputs`` bits: the first ``n_slow`` bits stay fixed for a task of
    ``steps_per_task`` samples (the reference's ``flip_after``), the other bits are fresh random bits
    every sample; the target is a fixed ``LTUTarget`` of all bits. Task ``i`` is one setting of the
    slow bits (``redraw``: all re-drawn; ``flip_one``: one bit flipped). Boundary-free: strategies get
    no experience signal. Run it at ``train.batch_size=1`` and ``train.epochs=1`` (one sample a
    step, as in the reference); the metric is the online squared error per task (``online_error``
    with ``monitors.plasticity.enabled=true``). Each task's eval data is ``eval_samples`` fresh samples of it.

    Args:
        n_tasks: settings of the slow bits (default 100; the reference runs 1M steps = 100 tasks).
        steps_per_task: samples per setting (default 10000).
        n_inputs: input bits (default 20).
        n_slow: slowly-changing bits, at most ``n_inputs`` (default 15).
        n_target_features: LTU units of the target network (default 100).
        beta: LTU threshold fraction (default 0.7).
        variant: ``redraw`` or ``flip_one`` (default ``redraw``).
        eval_samples: eval samples per task (default 200).
        seed: seed of the target network and of the data (default 0).
    """
    check_streaming(n_tasks, steps_per_task, "steps_per_task")
    if variant not in ("redraw", "flip_one"):
        raise ConfigError(f"scenario.variant must be one of redraw, flip_one; got '{variant}'")
    if not 0 <= n_slow <= n_inputs:
        raise ConfigError(f"scenario.n_slow must be in [0, n_inputs={n_inputs}], got {n_slow}")
    g = torch.Generator().manual_seed(seed)
    target = LTUTarget(n_inputs, n_target_features, beta, g)
    slow = slow_bits(n_tasks, n_slow, variant, g)

    def samples(n: int) -> Tensor:  # [n_tasks, n, n_inputs]: each task's slow bits + fresh random bits
        fast = torch.randint(0, 2, (n_tasks, n, n_inputs - n_slow), generator=g).float()
        return torch.cat([slow[:, None].expand(-1, n, -1), fast], dim=2)

    x_train, x_eval = samples(steps_per_task), samples(eval_samples)
    exps = [Experience(i, tensor_data(xt, target(xt), 0), tensor_data(xe, target(xe), 0), [],
                       info={"slow_bits": slow[i]})
            for i, (xt, xe) in enumerate(zip(x_train, x_eval))]
    return Scenario(Stream(exps, boundary_free=True), n_classes=1, input_shape=(n_inputs,),
                    name=f"slowly-changing-regression-{variant} ({n_tasks} tasks x {steps_per_task})",
                    objective="regression")
