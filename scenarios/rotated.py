"""Rotated images: one rotation angle per experience (domain-incremental)."""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge, MinLen
from clframe.scenarios._common import domain_incremental, make_cumulative

from clframe.config.registry import SCENARIOS
from clframe.data.datasets import load_dataset
from clframe.data.stream import Scenario
from clframe.errors import ConfigError


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate images [N, C, H, W] by ``degrees`` (counter-clockwise), bilinear, zero fill."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@SCENARIOS.register("rotated")
def rotated(
    dataset: str = "digits",
    n_experiences: Annotated[int, Ge(1)] = 3,
    angles: Annotated[list[float], MinLen(1)] | None = None,
    cumulative: bool = False,
    seed: int = 0,
    data_root: str | None = None,
    download: bool = False,
) -> Scenario:
    """Every experience holds all classes rotated by its own angle.

    Args:
        dataset: an image dataset, [N, C, H, W] (default ``digits``).
        n_experiences: number of angles when ``angles`` is not given, at least 1 (default 3).
        angles: the angles in degrees, one per experience (default: evenly spaced
            in [0, 180), e.g. 0, 60, 120).
        cumulative: joint incremental training: each experience trains on all rotations seen
            so far (the stability-gap "full replay" setting) (default False).
        seed: unused by the rotation itself; kept so every scenario takes the run seed.
        data_root: dataset directory (default: the dataset's own).
        download: allow downloading a missing dataset (default False).
    """
    if angles is not None and len(angles) == 0:
        raise ConfigError("scenario.angles is empty: a stream needs at least one experience. List one angle per "
                          "experience, e.g. scenario.angles=[0,90], or set scenario.angles=null to use "
                          "scenario.n_experiences evenly spaced angles.")
    if angles is None and n_experiences < 1:
        raise ConfigError(f"scenario.n_experiences must be >= 1, got {n_experiences}: a stream needs at least one "
                          "experience. Set scenario.n_experiences to the number of angles (default 3).")
    ds = load_dataset(dataset, data_root, download)
    if ds.x_train.dim() != 4:
        raise ConfigError(f"scenario 'rotated' needs images [N, C, H, W]; dataset '{dataset}' has shape "
                          f"{list(ds.x_train.shape)}.")
    angles = list(angles) if angles is not None else [i * 180.0 / n_experiences for i in range(n_experiences)]
    fns = [lambda x, a=a: rotate(x, a) for a in angles]
    scenario = domain_incremental(ds, fns, f"rotated-{dataset} {angles}", infos=[{"angle": a} for a in angles])
    return make_cumulative(scenario) if cumulative else scenario
