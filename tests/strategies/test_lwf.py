"""LwF: the distillation on the old classes (class- and task-incremental), the frozen teacher, that it forgets
less than naive, [replay, lwf], resume, refusals, and Avalanche's LwFPlugin."""

from __future__ import annotations

import pytest
import torch
from clframe.strategies.lwf import LwF
from strategy_helpers import Head, at, blob_stream, blobs, crosscheck, interrupted_and_resumed
from torch import nn

from clframe.config import compose
from clframe.config.registry import STRATEGIES
from clframe.core.module import CLModule
from clframe.core.strategy import StepContext, Strategy
from clframe.data.batch import Batch
from clframe.data.stream import Experience, Stream, TensorData
from clframe.errors import ConfigError
from clframe.models.model import Model
from clframe.run.runner import build, fit


def module_with(lwf: LwF, stream: Stream, momentum: float = 0.9, head: nn.Module | None = None,
                objective: str = "classification") -> CLModule:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 4))
    module = CLModule(Model(net[:2], head or Head(net[2])), {"lwf": lwf}, stream, [1] * len(stream), lr=0.1,
                      momentum=momentum, objective=objective)
    module.configure_optimizers()
    lwf.setup(module)
    return module


def batches(stream: Stream, exp: int, n: int = 3, size: int = 16) -> list[Batch]:
    d = stream[exp].train
    return [Batch(d.x[i * size:(i + 1) * size], d.y[i * size:(i + 1) * size], d.t[i * size:(i + 1) * size], exp)
            for i in range(n)]


def perturb(module: nn.Module, scale: float = 0.3, seed: int = 5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def kd(new: torch.Tensor, old: torch.Tensor, T: float) -> torch.Tensor:
    """KL(softmax(old / T) || softmax(new / T)) summed over classes, averaged over samples, written out."""
    p_old = torch.softmax(old / T, 1)
    return (p_old * (torch.log(p_old) - torch.log_softmax(new / T, 1))).sum(1).mean()


def context(module: CLModule, batch: Batch) -> StepContext:
    logits = module(batch.x, batch.t)
    return StepContext(module, batch, logits, module.objective.loss(logits, batch.y), 0, batch.exp)


# -- the distillation ----------------------------------------------------------------------------

def test_distillation_is_lambda_t2_kl_on_the_old_class_logits_of_a_frozen_copy():
    stream = blob_stream(n_exp=2)
    lwf = LwF(lwf_lambda=0.7, temperature=3.0)
    module = module_with(lwf, stream)
    for b in batches(stream, 0):
        module.training_step(b, 0)
    assert lwf.teacher is None and lwf.loss_terms(context(module, batches(stream, 0)[0])) == {}
    b1 = batches(stream, 1)
    module.training_step(b1[0], 0)  # ends experience 0: classes 0 and 1 are old; the copy is taken before this step
    assert lwf.old_classes == {0: [0, 1]}
    frozen = {k: v.clone() for k, v in lwf.teacher.state_dict().items()}
    assert not lwf.teacher.training and not any(p.requires_grad for p in lwf.teacher.parameters())
    for b in b1[1:]:
        module.training_step(b, 0)
    # training moved the model, not the copy
    assert all(torch.equal(v, lwf.teacher.state_dict()[k]) for k, v in frozen.items())
    assert not torch.equal(frozen["backbone.0.weight"], module.backbone[0].weight)
    ctx = context(module, b1[0])
    got = lwf.loss_terms(ctx)["lwf"]
    with torch.no_grad():
        old = lwf.teacher(b1[0].x, b1[0].t)
    want = 0.7 * 9.0 * kd(ctx.logits[:, [0, 1]], old[:, [0, 1]], 3.0)
    torch.testing.assert_close(got, want)
    assert got > 0
    # the gradient reaches the model's weights (the new classes' logits get none from it)
    grads = torch.autograd.grad(got, [module.head.fc.weight])[0]
    assert grads[:2].abs().sum() > 0 and grads[2:].abs().sum() == 0


def test_distillation_is_zero_when_the_model_is_the_copy():
    stream = blob_stream(n_exp=2)
    lwf = LwF()
    module = module_with(lwf, stream)
    lwf.on_experience_end(stream[0], module)
    lwf.on_experience_start(stream[1], module)
    assert lwf.loss_terms(context(module, batches(stream, 1)[0]))["lwf"].item() == pytest.approx(0.0, abs=1e-7)


def test_task_incremental_distils_each_old_task_on_its_own_head():
    from clframe.models.heads.linear import MultiHead

    g = torch.Generator().manual_seed(0)

    def data(task: int) -> TensorData:
        y = torch.tensor([2 * task, 2 * task + 1]).repeat_interleave(20)
        return TensorData(torch.randn(40, 4, generator=g), y, torch.full_like(y, task))

    stream = Stream([Experience(i, d, d, [2 * i, 2 * i + 1], task_label=i) for i, d in enumerate(map(data, range(3)))])
    torch.manual_seed(0)
    lwf = LwF(temperature=2.0)
    module = module_with(lwf, stream, head=MultiHead(16, 6, 3))
    for e in stream[:2]:
        lwf.on_experience_end(e, module)
    lwf.on_experience_start(stream[2], module)
    perturb(module)
    b = batches(stream, 2)[0]
    got = lwf.loss_terms(context(module, b))["lwf"]
    want = 0.0
    for task in (0, 1):
        tt = torch.full_like(b.t, task)
        cls = [2 * task, 2 * task + 1]
        with torch.no_grad():
            old = lwf.teacher(b.x, tt)[:, cls]
        want = want + 4.0 * kd(module(b.x, tt)[:, cls], old, 2.0)
    torch.testing.assert_close(got, want)
    assert got > 0


def test_state_dict_round_trip():
    stream = blob_stream(n_exp=2)
    a = LwF()
    module = module_with(a, stream)
    a.on_experience_end(stream[0], module)
    a.on_experience_start(stream[1], module)
    perturb(module)
    state = a.state_dict()
    assert LwF().state_dict() == {"old_classes": {}, "teacher": None}
    b = LwF()
    b.setup(module)
    b.load_state_dict(state)
    ctx = context(module, batches(stream, 1)[0])
    assert b.old_classes == {0: [0, 1]} and torch.equal(b.loss_terms(ctx)["lwf"], a.loss_terms(ctx)["lwf"])


# -- refusals ------------------------------------------------------------------------------------

def test_ranges_are_checked_when_built_from_a_config():
    with pytest.raises(ConfigError, match=r"'strategies\.lwf\.temperature' must be > 0, got 0"):
        STRATEGIES.build("lwf", {"temperature": 0})
    with pytest.raises(ConfigError, match=r"'strategies\.lwf\.lwf_lambda' must be >= 0, got -1"):
        STRATEGIES.build("lwf", {"lwf_lambda": -1})


def test_a_regression_objective_is_refused():  # hidden boundaries: tests/test_boundaries.py
    with pytest.raises(ConfigError, match=r"strategy lwf .*classification scenario, not a regression one"):
        module_with(LwF(), blob_stream(), objective="regression")


def test_a_hypernetwork_is_refused(tiny):
    with pytest.raises(ConfigError, match=r"strategy lwf .*hypernetwork.*strategy=hnet_reg"):
        fit(build(compose(tiny + ["strategy=lwf", "hypernet=hnet_mlp", "scenario.task_incremental=true"])))


# -- in a run ------------------------------------------------------------------------------------

PERMUTED = ["experiment=permuted_digits", "scenario.n_experiences=2", "backbone.hidden=[64]", "train.epochs=3",
            "logger.progress=false"]


def test_lwf_forgets_less_than_naive_on_permuted_digits():
    R = {}
    for strategy in ("naive", "lwf"):
        built = build(compose(PERMUTED + [f"strategy={strategy}"]))
        fit(built)
        R[strategy] = built.module.acc_matrix
    assert built.module.loss_log[-1]["loss/lwf"] > 0
    assert R["lwf"][0] == R["naive"][0]  # identical until the first copy
    forgetting = {k: r[0][0] - r[1][0] for k, r in R.items()}
    assert forgetting["lwf"] < forgetting["naive"] - 0.05, forgetting


class TeacherProbe(Strategy):
    """Placed after lwf: records how many samples each teacher forward sees."""

    def __init__(self, lwf: LwF) -> None:
        self.lwf, self.sizes, self.hooked = lwf, [], None

    def on_experience_start(self, exp, module):
        if self.lwf.teacher is not None and self.hooked is not self.lwf.teacher:
            self.lwf.teacher.register_forward_pre_hook(lambda m, args: self.sizes.append(len(args[0])))
            self.hooked = self.lwf.teacher


def test_replay_and_lwf_combine_and_lwf_distils_the_replayed_samples_too(tiny):
    built = build(compose(tiny + ["strategy=[replay,lwf]", "strategies.replay.batch_size_mem=10"]))
    m = built.module
    probe = TeacherProbe(m.strategies["lwf"])
    m.strategies = {**m.strategies, "probe": probe}
    m.set_plugins([])
    fit(built)
    assert len(m.acc_matrix) == 2 and m.loss_log[-1]["loss/lwf"] > 0
    assert probe.sizes and probe.sizes[0] == 32 + 10  # the new batch and the replayed samples
    naive = build(compose(tiny + ["strategy=replay", "strategies.replay.batch_size_mem=10"]))
    fit(naive)
    assert m.acc_matrix[0] == naive.module.acc_matrix[0] and m.acc_matrix[1] != naive.module.acc_matrix[1]


RESUME = ["scenario.n_experiences=3", "backbone.hidden=[32]", "train.epochs=1", "logger.progress=false",
          "strategy=lwf", "backbone.dropout=0.1", "train.momentum=0.9", "checkpoint.every=7", "checkpoint.keep=1000"]


@pytest.mark.parametrize("where", ["mid_exp1", "boundary"])
def test_resume_is_bit_identical(tmp_path, where):
    a, b = interrupted_and_resumed(RESUME, tmp_path, at(where))
    assert a["strategies"]["lwf"]["old_classes"] == b["strategies"]["lwf"]["old_classes"] == {0: list(range(10))}
    for key, v in a["strategies"]["lwf"]["teacher"].items():
        assert torch.equal(v, b["strategies"]["lwf"]["teacher"][key]), key


# -- Avalanche's LwFPlugin on the same stream ----------------------------------------------------

def test_final_accuracy_equals_avalanches_on_gaussian_blobs_with_full_batches():
    # one batch per experience (400 samples): no shuffling, so both trainings take the same steps and agree up
    # to float summation order. Avalanche has no T^2 factor: its alpha is lwf_lambda * T^2 here. Its teacher
    # stays in train mode, which changes nothing without dropout or BatchNorm.
    from avalanche.training.plugins import LwFPlugin

    setting = dict(n_exp=3, hidden=32, epochs=30, bs=400, lr=0.5, seed=0)
    naive, _ = crosscheck({}, [], *blobs(), **setting)
    ours, theirs = crosscheck({"lwf": LwF(0.25, 2.0)}, [LwFPlugin(alpha=1.0, temperature=2.0)], *blobs(), **setting)
    assert abs(ours - naive) > 0.05, (ours, naive)
    assert ours == pytest.approx(theirs, abs=0.005)


@pytest.mark.slow
def test_final_accuracy_agrees_with_avalanche_on_split_digits_over_three_seeds():
    from avalanche.training.plugins import LwFPlugin

    from clframe.data.datasets import load_dataset

    ds = load_dataset("digits", None, False)
    pairs = [crosscheck({"lwf": LwF()}, [LwFPlugin(alpha=4.0, temperature=2.0)], ds.x_train, ds.y_train, ds.x_test,
                        ds.y_test, n_exp=5, hidden=100, epochs=3, bs=32, lr=0.1, seed=seed) for seed in range(3)]
    ours, theirs = (sum(p[i] for p in pairs) / 3 for i in (0, 1))
    assert ours == pytest.approx(theirs, abs=0.03), pairs
