"""Permuted inputs: one fixed random pixel permutation per experience (domain- or task-incremental)."""

from __future__ import annotations

import torch
from clframe.scenarios._common import domain_incremental

from clframe.config.registry import SCENARIOS
from clframe.data.datasets import load_dataset
from clframe.data.stream import Scenario
from clframe.errors import ConfigError


@SCENARIOS.register("permuted")
def permuted(
    dataset: str = "digits",
    n_experiences: int = 5,
    identity_first: bool = False,
    task_incremental: bool = False,
    seed: int = 0,
    data_root: str | None = None,
    download: bool = False,
) -> Scenario:
    """Every experience holds all classes with the input features permuted.

    Args:
        dataset: dataset name (default ``digits``).
        n_experiences: number of permutations, at least 1 (default 5).
        identity_first: leave the first experience unpermuted (default False).
        task_incremental: give experience ``i`` task label ``i`` (a head, or a hypernetwork task
            embedding, per permutation) (default False).
        seed: seed for the permutations (default 0).
        data_root: dataset directory (default: the dataset's own).
        download: allow downloading a missing dataset (default False).
    """
    if n_experiences < 1:
        raise ConfigError(f"scenario.n_experiences must be >= 1, got {n_experiences}: a stream needs at least one "
                          "experience. Set scenario.n_experiences to the number of permutations (default 5).")
    ds = load_dataset(dataset, data_root, download)
    shape = ds.x_train.shape[1:]
    d = shape.numel()
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(d, generator=g) for _ in range(n_experiences)]
    if identity_first:
        perms[0] = torch.arange(d)

    def permute(p: torch.Tensor):
        return lambda x: x.flatten(1)[:, p].reshape(len(x), *shape)

    kind = "task" if task_incremental else "domain"
    return domain_incremental(ds, [permute(p) for p in perms],
                              f"permuted-{dataset} ({n_experiences} experiences, {kind}-incremental)",
                              task_incremental=task_incremental)
