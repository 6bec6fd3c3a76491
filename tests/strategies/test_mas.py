"""MAS: the importance (per sample and per minibatch, unlabelled, eval mode, masked heads), its accumulation,
the penalty, that it forgets less than naive, resume, refusals, and Avalanche's MASPlugin."""

from __future__ import annotations

import json

import pytest
import torch
from clframe.strategies.mas import MAS, output_sensitivity
from strategy_helpers import Head, at, blob_stream, blobs, crosscheck, flat, interrupted_and_resumed
from torch import nn

from clframe.config import compose
from clframe.config.registry import STRATEGIES
from clframe.core.module import CLModule
from clframe.data.stream import Stream, TensorData
from clframe.errors import ConfigError
from clframe.models.model import Model
from clframe.run.runner import build, fit


def module_with(mas: MAS, stream: Stream, momentum: float = 0.9, dropout: float = 0.0) -> CLModule:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 4))
    module = CLModule(Model(net[:3], Head(net[3])), {"mas": mas}, stream, [1] * len(stream), lr=0.1,
                      momentum=momentum)
    module.configure_optimizers()
    mas.setup(module)
    return module


def perturb(module: nn.Module, scale: float = 0.3, seed: int = 5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


# -- the importance -------------------------------------------------------------------------------

def by_hand(module: CLModule, d: TensorData, batch: int) -> torch.Tensor:
    """sum over minibatches of |d sum ||f(x)||^2 / d theta| over the sample count (batch 1: per sample)."""
    params, total = list(module.parameters()), torch.zeros(len(flat(module)))
    for i in range(0, len(d), batch):
        out = module(d.x[i:i + batch], d.t[i:i + batch])
        grads = torch.autograd.grad(out.pow(2).sum(), params)
        total += torch.cat([g.reshape(-1) for g in grads]).abs()
    return total / len(d)


def test_per_sample_importance_is_the_mean_absolute_per_sample_gradient_for_any_batch_size():
    stream = blob_stream()
    module = module_with(MAS(), stream)
    want = by_hand(module, stream[0].train, 1)
    for bs in (1, 7, 80):
        got = output_sensitivity(module.model, list(module.parameters()), stream[0].train, "per_sample", bs, None)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_minibatch_importance_is_the_authors_estimate_and_per_sample_at_batch_one():
    stream = blob_stream()
    module = module_with(MAS(), stream)
    params, d = list(module.parameters()), stream[0].train
    torch.testing.assert_close(output_sensitivity(module.model, params, d, "minibatch", 16, None),
                               by_hand(module, d, 16))
    torch.testing.assert_close(output_sensitivity(module.model, params, d, "minibatch", 1, None),
                               output_sensitivity(module.model, params, d, "per_sample", 16, None))
    # the absolute value of a sum is at most the sum of absolute values: minibatches underestimate
    assert (by_hand(module, d, 16) <= by_hand(module, d, 1) + 1e-6).all()


def test_importance_reads_no_labels_runs_in_eval_mode_and_restores_training_mode():
    stream = blob_stream()
    module = module_with(MAS(), stream, dropout=0.5)
    module.train()
    params, d = list(module.parameters()), stream[0].train
    a = output_sensitivity(module.model, params, d, "per_sample", 16, None)
    relabelled = TensorData(d.x, torch.randint(0, 4, d.y.shape), d.t)
    b = output_sensitivity(module.model, params, relabelled, "per_sample", 16, None)
    assert torch.equal(a, b) and module.training  # no dropout noise either: the same twice
    torch.testing.assert_close(output_sensitivity(module.model, params, d, "per_sample", 16, 10),
                               output_sensitivity(module.model, params, d.subset(torch.arange(10)), "per_sample", 4,
                                                  None))


def test_logits_a_multi_head_masks_out_count_as_zero():
    from clframe.models.heads.linear import MultiHead

    torch.manual_seed(0)
    head = MultiHead(5, 4, 2)
    head.set_task_classes(0, [0, 1])
    head.set_task_classes(1, [2, 3])
    model = Model(nn.Identity(), head)
    x, t = torch.randn(12, 5), torch.arange(12) % 2
    got = output_sensitivity(model, list(model.parameters()), TensorData(x, t * 2, t), "per_sample", 4, None)
    assert torch.isfinite(got).all()
    want = torch.zeros_like(got)
    for i in range(12):
        logits = nn.functional.linear(x[i], head.weight, head.bias).view(2, 4)[t[i], 2 * t[i]:2 * t[i] + 2]
        grads = torch.autograd.grad(logits.pow(2).sum(), [head.weight, head.bias])
        want += torch.cat([g.reshape(-1) for g in grads]).abs() / 12
    torch.testing.assert_close(got, want)


# -- accumulation and penalty -------------------------------------------------------------------

def test_importance_adds_up_over_experiences_anchored_at_the_latest_weights():
    stream = blob_stream()
    mas = MAS(mas_lambda=2.0)
    module = module_with(mas, stream)
    first = by_hand(module, stream[0].train, 1)
    mas.on_experience_end(stream[0], module)
    torch.testing.assert_close(mas.importance, first)
    perturb(module)
    second = by_hand(module, stream[1].train, 1)
    mas.on_experience_end(stream[1], module)
    torch.testing.assert_close(mas.importance, first + second)
    assert torch.equal(mas.anchor, flat(module))


def test_penalty_is_zero_at_the_anchor_and_its_gradient_is_2_lambda_omega_delta():
    stream = blob_stream()
    mas = MAS(mas_lambda=3.0)
    module = module_with(mas, stream)
    assert mas.loss_terms(None) == {}
    mas.on_experience_end(stream[0], module)
    assert mas.loss_terms(None)["mas"].item() == 0.0
    perturb(module)
    pen = mas.loss_terms(None)["mas"]
    delta = flat(module) - mas.anchor
    torch.testing.assert_close(pen, 3.0 * (mas.importance * delta**2).sum())
    grads = torch.autograd.grad(pen, list(module.parameters()))
    torch.testing.assert_close(torch.cat([g.reshape(-1) for g in grads]), 2 * 3.0 * mas.importance * delta)


def test_state_dict_round_trip_before_and_after_setup():
    stream = blob_stream()
    a = MAS()
    module = module_with(a, stream)
    a.on_experience_end(stream[0], module)
    perturb(module)
    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in a.state_dict().items()}
    late, early = MAS(), MAS()
    late.setup(module)
    late.load_state_dict(state)
    early.load_state_dict(state)  # before setup: applied there
    early.setup(module)
    for s in (late, early):
        assert torch.equal(s.importance, a.importance) and torch.equal(s.anchor, a.anchor)
        assert torch.equal(s.loss_terms(None)["mas"], a.loss_terms(None)["mas"])


# -- refusals ------------------------------------------------------------------------------------

def test_ranges_are_checked_when_built_from_a_config():
    with pytest.raises(ConfigError, match=r"'strategies\.mas\.mas_lambda' must be >= 0, got -1"):
        STRATEGIES.build("mas", {"mas_lambda": -1})
    with pytest.raises(ConfigError, match=r"'strategies\.mas\.batch_size' must be >= 1, got 0"):
        STRATEGIES.build("mas", {"batch_size": 0})


# -- in a run ------------------------------------------------------------------------------------

PERMUTED = ["experiment=permuted_digits", "scenario.n_experiences=2", "backbone.hidden=[64]", "train.epochs=3",
            "logger.progress=false"]


def test_mas_forgets_less_than_naive_on_permuted_digits():
    R = {}
    for strategy in ("naive", "mas"):
        built = build(compose(PERMUTED + [f"strategy={strategy}"]))
        fit(built)
        R[strategy] = built.module.acc_matrix
    assert built.module.loss_log[-1]["loss/mas"] > 0
    assert R["mas"][0] == R["naive"][0]  # identical until the first importance
    forgetting = {k: r[0][0] - r[1][0] for k, r in R.items()}
    assert forgetting["mas"] < forgetting["naive"] - 0.05, forgetting


RESUME = ["scenario.n_experiences=3", "backbone.hidden=[32]", "train.epochs=1", "logger.progress=false",
          "strategy=mas", "strategies.mas.mas_lambda=0.1", "backbone.dropout=0.1", "train.momentum=0.9",
          "checkpoint.every=7", "checkpoint.keep=1000"]


@pytest.mark.parametrize("where", ["mid_exp1", "boundary"])
def test_resume_is_bit_identical(tmp_path, where):
    a, b = interrupted_and_resumed(RESUME, tmp_path, at(where))
    for key in ("importance", "anchor"):
        assert torch.equal(a["strategies"]["mas"][key], b["strategies"]["mas"][key]), key


# -- Avalanche's MASPlugin on the same stream ----------------------------------------------------

def summed_mas_plugin(mas_lambda: float):
    """Avalanche 0.6's MAS adding each experience's importance to the old ones, as the paper and the authors'
    code do (Avalanche averages them with ``alpha = 0.5``): its ``alpha = 0`` keeps the new importance
    alone, to which the old is added."""
    from avalanche.training.plugins import MASPlugin

    class SummedMAS(MASPlugin):
        def after_training_exp(self, strategy, **kwargs):
            old = {k: v.data.clone() for k, v in (self.importance or {}).items()}
            super().after_training_exp(strategy, **kwargs)
            for k, v in old.items():
                self.importance[k].data += v

    return SummedMAS(lambda_reg=mas_lambda, alpha=0.0)


def test_final_accuracy_equals_avalanches_on_gaussian_blobs_with_full_batches():
    # one batch per experience (400 samples): no shuffling, so both trainings take the same steps and agree up
    # to float summation order; Avalanche estimates on minibatches of train_mb_size (400 here), which our
    # minibatch estimate with batch_size 400 equals; MAS moves the result far from naive's
    setting = dict(n_exp=3, hidden=32, epochs=30, bs=400, lr=0.5, seed=0)
    naive, _ = crosscheck({}, [], *blobs(), **setting)
    ours, theirs = crosscheck({"mas": MAS(0.01, "minibatch", 400)}, [summed_mas_plugin(0.01)], *blobs(), **setting)
    assert abs(ours - naive) > 0.05, (ours, naive)
    assert ours == pytest.approx(theirs, abs=0.005)


@pytest.mark.slow
def test_final_accuracy_agrees_with_avalanche_on_split_digits_over_three_seeds():
    from clframe.data.datasets import load_dataset

    ds = load_dataset("digits", None, False)
    pairs = [crosscheck({"mas": MAS(0.01, "minibatch", 32)}, [summed_mas_plugin(0.01)], ds.x_train, ds.y_train,
                        ds.x_test, ds.y_test, n_exp=5, hidden=100, epochs=3, bs=32, lr=0.1, seed=seed)
             for seed in range(3)]
    ours, theirs = (sum(p[i] for p in pairs) / 3 for i in (0, 1))
    assert ours == pytest.approx(theirs, abs=0.03), pairs


@pytest.mark.slow
def test_ddp_ranks_keep_the_same_si_mas_and_lwf_state(tmp_path):
    """Two CPU processes over gloo: MAS estimates on every other sample per rank and reduces the sums, SI
    integrates the all-reduced gradients, LwF copies the same weights: every rank holds the same state."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    run_dir = tmp_path / "run"
    proc = subprocess.run([str(Path(sys.executable).parent / "clframe"), "run", "scenario.n_experiences=2",
                           "backbone.hidden=[32]", "logger.progress=false", "train.num_threads=1", "train.epochs=2",
                           "trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                           "strategy=[si,mas,lwf]", "strategies.mas.mas_lambda=0.1", f"hydra.run.dir={run_dir}"],
                          cwd=tmp_path, env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["rank_weight_max_abs_diff"] == 0.0
    files = sorted((run_dir / "checkpoints").glob("step-*-rank*.ckpt"))
    last = max(int(p.name.split("-")[1]) for p in files)
    r0, r1 = (torch.load(run_dir / "checkpoints" / f"step-{last:08d}-rank{r}.ckpt", weights_only=True)["module"]
              ["strategies"] for r in (0, 1))
    for name, keys in (("si", ("omega", "importance", "anchor", "start")), ("mas", ("importance", "anchor"))):
        for key in keys:
            assert torch.equal(r0[name][key], r1[name][key]), (name, key)
    assert r0["mas"]["importance"].sum() > 0 and r0["si"]["importance"].sum() > 0
    assert r0["lwf"]["old_classes"] == r1["lwf"]["old_classes"]
    assert all(torch.equal(v, r1["lwf"]["teacher"][k]) for k, v in r0["lwf"]["teacher"].items())
