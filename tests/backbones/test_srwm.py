"""The SRWM backbone: shapes, causality over padding, the kernel path, and training with strategies."""

from __future__ import annotations

import pytest
import torch

from clframe.config import compose
from clframe.config.registry import BACKBONES
from clframe.data.sequences import with_lengths
from clframe.run.runner import run


def build(**params):
    torch.manual_seed(0)
    return BACKBONES.build("srwm", {"d_model": 8, "n_heads": 2, **params}, input_shape=(7, 4))


def seqs(n=3, t=7, f=3, lengths=(7, 4, 1)):
    g = torch.Generator().manual_seed(1)
    return with_lengths(torch.randn(n, t, f, generator=g), torch.tensor(lengths))


def test_the_kernel_path_gives_the_naive_result():
    x = seqs()
    naive, kernel = build(backend="naive"), build(backend="triton")
    out_n, out_k = naive(x), kernel(x)
    torch.testing.assert_close(out_k, out_n, rtol=1e-5, atol=1e-5)
    out_n.sum().backward()
    out_k.sum().backward()
    for (name, a), b in zip(kernel.named_parameters(), naive.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("strategy", ["replay", "ewc"])
def test_srwm_learns_split_sequential_digits_with_strategies(tmp_path, strategy):
    s = run(compose(["scenario=sequential_digits", "scenario.n_experiences=2", "scenario.task_incremental=true",
                     "head=multihead", "backbone=srwm", "backbone.d_model=32", "backbone.n_layers=1",
                     f"strategy={strategy}", "train.optimizer=adam", "train.lr=0.003", "train.epochs=6",
                     "monitors.continual.every=20", "logger.progress=false", "checkpoint.enabled=false"]), tmp_path)
    assert len(s["acc_matrix"]) == 2 and min(s["acc_matrix"][0][0], s["acc_matrix"][1][1]) > 0.75
