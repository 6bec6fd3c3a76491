"""Unit ablation: scores with a fraction of a recurrent backbone's units silenced.

A backbone that supports it has ``silence(layer, units)``, which silences those units in place
(their state stays at 0 and nothing reads it). The utility silences the same fraction of every
layer, in copies of the model, and evaluates each experience's eval data; ``clframe ablate
RUN_DIR`` runs it on a finished run's last checkpoint.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clframe.core.objectives import CLASSIFICATION, Objective
from clframe.data.stream import TensorData
from clframe.errors import ConfigError
from clframe.evaluation.evaluate import evaluate_many
from clframe.models.model import Model
from clframe.models.protocols import HasTimescales, Silenceable

ORDERS = ("random", "shortest_tau", "longest_tau")


def layer_sizes(backbone: nn.Module) -> list[int]:
    """Units per recurrent layer of a backbone that can ``silence`` units."""
    if not isinstance(backbone, Silenceable):
        raise ConfigError(f"{type(backbone).__name__} cannot silence units (it has no silence(layer, units) method); "
                          "ablation works on the recurrent backbones gru, lstm and tau_rnn.")
    if isinstance(backbone, HasTimescales):
        return [len(t) for t in backbone.timescales()]
    return [backbone.out_features] * backbone.num_layers


def choose_units(backbone: nn.Module, fraction: float, order: str, generator: torch.Generator) -> list[Tensor]:
    """The units to silence in each layer: ``round(fraction * size)`` of them, drawn at random or
    those with the shortest or longest timescales (backbones with ``timescales()``)."""
    if order not in ORDERS:
        raise ConfigError(f"unknown ablation order '{order}'; valid: {', '.join(ORDERS)}")
    if not 0 <= fraction <= 1:
        raise ConfigError(f"ablation fractions must be in [0, 1], got {fraction}")
    sizes = layer_sizes(backbone)
    if order != "random" and not isinstance(backbone, HasTimescales):
        raise ConfigError(f"order={order} needs a backbone with timescales (tau_rnn); use order=random.")
    out = []
    for i, size in enumerate(sizes):
        k = round(fraction * size)
        if order == "random":
            ranked = torch.randperm(size, generator=generator)
        else:
            ranked = backbone.timescales()[i].detach().cpu().argsort(descending=order == "longest_tau")
        out.append(ranked[:k])
    return out


def ablate(
    backbone: nn.Module, head: nn.Module, datasets: Sequence[TensorData], fractions: Sequence[float] = (0, .1, .25, .5),
    order: str = "random", repeats: int = 5, seed: int = 0, batch_size: int = 1000,
    objective: Objective = CLASSIFICATION,
) -> dict[str, Any]:
    """Scores on each dataset with ``fraction`` of every layer's units silenced.

    Args:
        backbone, head: the trained model (left untouched: each ablation silences a copy).
        datasets: eval data, e.g. every experience's.
        fractions: fractions of units to silence (default 0, 0.1, 0.25, 0.5).
        order: ``random``, ``shortest_tau`` or ``longest_tau`` (default ``random``).
        repeats: random draws per fraction; orders by tau are deterministic and run once (default 5).
        seed: seed of the random draws (default 0).
        batch_size: samples per forward pass (default 1000).
        objective: the scenario's objective (default classification).

    Returns:
        ``fractions``, ``order``, ``scores`` [fraction][repeat][dataset] and ``mean`` [fraction][dataset].
    """
    g = torch.Generator().manual_seed(seed)
    device = next(backbone.parameters()).device
    scores = []
    for f in fractions:
        runs = []
        for _ in range(repeats if order == "random" else 1):
            model = Model(copy.deepcopy(backbone), copy.deepcopy(head)).eval()
            for layer, units in enumerate(choose_units(model.backbone, f, order, g)):
                if len(units):
                    model.backbone.silence(layer, units.to(device))
            runs.append(evaluate_many(model, list(datasets), batch_size, objective)[0])
        scores.append(runs)
    mean = [[sum(r[j] for r in runs) / len(runs) for j in range(len(datasets))] for runs in scores]
    return {"fractions": list(fractions), "order": order, "scores": scores, "mean": mean}


def ablate_run(run_dir: str | Path, fractions: Sequence[float], order: str = "random", repeats: int = 5,
               seed: int = 0, trust: bool = False) -> dict[str, Any]:
    """``ablate`` a finished run's last checkpoint on every experience's eval data; writes
    ``ablation.json`` and ``plots/ablation.png`` into ``run_dir``. The run's stored config may name
    only registered components unless ``trust`` (default False; see ``clframe.config.trust``)."""
    from contextlib import nullcontext

    from omegaconf import OmegaConf

    from clframe.checkpoint.files import latest_checkpoint
    from clframe.config.trust import from_file
    from clframe.run.build import build, quiet

    quiet()
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml).")
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    config["logger"]["progress"] = False
    source = run_dir / "config.yaml"
    with nullcontext() if trust else from_file(str(source), config, hint="rerun with --trust"):
        built = build(config)
    path, state = latest_checkpoint(run_dir)
    built.module.load_state_dict(state["module"]["model"])
    names = [e.info.get("N", e.index) for e in built.scenario.stream]
    out = ablate(built.module.backbone, built.module.head, [e.eval for e in built.scenario.stream], fractions, order,
                 repeats, seed, built.config["eval"]["batch_size"], built.module.objective)
    out |= {"experiences": names, "checkpoint": str(path), "step": state["step"]}
    (run_dir / "ablation.json").write_text(json.dumps(out, indent=2) + "\n")
    _plot(out, run_dir / "plots" / "ablation.png", built.module.objective.score_name)
    return out


def _plot(out: dict[str, Any], path: Path, score: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for j, name in enumerate(out["experiences"]):
        ax.plot(out["fractions"], [m[j] for m in out["mean"]], marker="o", label=str(name))
    ax.set(xlabel=f"fraction of units silenced ({out['order']})", ylabel=score, title=f"ablation at step {out['step']}")
    ax.legend(title="experience", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
