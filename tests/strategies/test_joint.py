"""Joint: the walk over the shuffled union, its shares across ranks, resume, refusals, and Avalanche's
JointTraining."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from clframe.strategies import joint as joint_module
from clframe.strategies.joint import Joint
from strategy_helpers import interrupted_and_resumed
from torch import nn

from clframe.config import compose
from clframe.core.module import CLModule
from clframe.data.batch import Batch
from clframe.data.iterator import StreamIterator
from clframe.data.stream import Experience, Stream, TensorData
from clframe.errors import ConfigError
from clframe.evaluation.evaluate import evaluate_many
from clframe.evaluation.metrics import summary_metrics
from clframe.models.model import Model
from clframe.run.engines import fit_loop
from clframe.run.runner import build, fit


class Head(nn.Module):
    """A linear layer as a clframe head (task labels unused)."""

    def __init__(self, fc: nn.Module) -> None:
        super().__init__()
        self.fc = fc

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.fc(h)


def id_stream(sizes: tuple[int, ...] = (37, 21, 50)) -> Stream:
    """Experiences whose samples carry their own id as input (x = id), label id % 4 and task label exp."""
    exps, start = [], 0
    for i, n in enumerate(sizes):
        ids = torch.arange(start, start + n)
        data = TensorData(ids.float().view(-1, 1), ids % 4, torch.full((n,), i))
        exps.append(Experience(i, data, data, [0, 1, 2, 3], task_label=i))
        start += n
    return Stream(exps)


def joint_on(stream: Stream, **kwargs) -> Joint:
    j = Joint(**kwargs)
    module = CLModule(Model(nn.Linear(1, 4), Head(nn.Identity())), {"joint": j}, stream, [1] * len(stream))
    j.setup(module)
    return j


def walk(j: Joint, stream: Stream, batch_size: int, epochs: int) -> list[Batch]:
    return [j.before_forward(b, None) for b in StreamIterator(stream, batch_size, epochs, seed=3)]


# -- the walk ------------------------------------------------------------------------------------

@pytest.mark.parametrize("epochs", [1, 3])
def test_every_pass_is_a_permutation_of_the_union_in_the_iterators_batch_sizes(epochs):
    stream = id_stream()
    j = joint_on(stream)
    batches = walk(j, stream, batch_size=8, epochs=epochs)
    plain = list(StreamIterator(stream, 8, epochs, seed=3))
    assert [len(b) for b in batches] == [len(b) for b in plain]
    assert [b.exp for b in batches] == [b.exp for b in plain]
    ids = torch.cat([b.x[:, 0] for b in batches]).long()
    n = 37 + 21 + 50
    assert len(ids) == epochs * n == j.consumed
    passes = ids.view(epochs, n)
    for p in passes:
        assert sorted(p.tolist()) == list(range(n))  # each pass draws every sample of the union once
    # the passes are shuffled and differ; batches mix the experiences
    assert passes[0].tolist() != list(range(n))
    if epochs > 1:
        assert passes[0].tolist() != passes[1].tolist()
    first = batches[0]
    assert len(set(first.t.tolist())) > 1
    # labels and task labels travel with their samples
    for b in batches:
        ids = b.x[:, 0].long()
        assert torch.equal(b.y, ids % 4)
        assert torch.equal(b.t, (ids >= 37).long() + (ids >= 58).long())


def test_state_dict_continues_the_walk_where_it_stopped():
    stream = id_stream()
    a = joint_on(stream, seed=4)
    batches = list(StreamIterator(stream, 8, 2, seed=0))
    whole = [a.before_forward(b, None) for b in batches]
    b = joint_on(stream, seed=4)
    for batch in batches[:9]:
        b.before_forward(batch, None)
    c = joint_on(stream, seed=4)
    c.load_state_dict(b.state_dict())
    rest = [c.before_forward(batch, None) for batch in batches[9:]]
    assert all(torch.equal(x.x, y.x) for x, y in zip(whole[9:], rest))


def test_each_rank_takes_its_share_of_the_global_batch(monkeypatch):
    stream = id_stream()
    out = {}
    for r in (0, 1):
        monkeypatch.setattr(joint_module, "rank", lambda r=r: r)
        j = joint_on(stream)
        x = stream[0].train.x
        out[r] = [j.before_forward(Batch(x[:3], x[:3, 0].long(), x[:3, 0].long(), 0, shares=(3, 2)), None)
                  for _ in range(2)]
        assert j.consumed == 10
    single = joint_on(stream)
    whole = [single.before_forward(Batch(x[:5], x[:5, 0].long(), x[:5, 0].long(), 0), None) for _ in range(2)]
    for step in range(2):
        both = torch.cat([out[0][step].x, out[1][step].x[:2]])
        assert torch.equal(both, whole[step].x)
        assert out[0][step].shares == (3, 2)


# -- refusals ------------------------------------------------------------------------------------

def test_combining_with_a_strategy_that_acts_is_refused(tiny):
    built = build(compose(tiny + ["strategy=[joint,replay]"]))
    with pytest.raises(ConfigError, match=r"strategy=joint .* cannot be combined with \['replay'\]"):
        fit(built)


def test_reset_optimizer_is_refused(tiny):
    built = build(compose(tiny + ["strategy=joint", "train.reset_optimizer=true"]))
    with pytest.raises(ConfigError, match=r"train\.reset_optimizer=true .* Set train\.reset_optimizer=false"):
        fit(built)


def test_an_ordered_stream_is_refused():
    stream = id_stream()
    stream.ordered = True
    with pytest.raises(ConfigError, match="this stream is ordered"):
        joint_on(stream)


# -- in a run ------------------------------------------------------------------------------------

SPLIT5 = ["scenario.n_experiences=5", "backbone.hidden=[64]", "train.epochs=3", "train.lr=0.1",
          "logger.progress=false"]


def test_joint_is_far_above_naive_and_trains_as_many_samples():
    runs = {}
    for strategy in ("naive", "joint"):
        built = build(compose(SPLIT5 + [f"strategy={strategy}"]))
        fit(built)
        runs[strategy] = built
    acc = {k: summary_metrics(b.module.acc_matrix)["final_avg_acc"] for k, b in runs.items()}
    assert acc["naive"] < 0.3 and acc["joint"] > 0.75
    n = sum(len(e.train) for e in runs["joint"].scenario.stream)
    assert runs["joint"].module.strategies["joint"].consumed == 3 * n == runs["joint"].module.samples_seen


RESUME = ["scenario.n_experiences=3", "backbone.hidden=[32]", "train.epochs=2", "logger.progress=false",
          "strategy=joint", "backbone.dropout=0.1", "train.momentum=0.9", "checkpoint.every=7",
          "checkpoint.keep=1000"]


def test_resume_is_bit_identical(tmp_path):
    # inside the second experience, in a later pass
    a, b = interrupted_and_resumed(RESUME, tmp_path, lambda ref, steps: next(s for s in steps if s > ref["steps"] // 2))
    assert a["strategies"]["joint"] == b["strategies"]["joint"]


# -- Avalanche's JointTraining on the same stream ------------------------------------------------

def crosscheck(x_tr, y_tr, x_te, y_te, n_exp: int, hidden: int, epochs: int, bs: int, lr: float,
               seed: int) -> tuple[float, float]:
    """Final average accuracy of clframe's Joint and Avalanche's JointTraining from the same initial
    weights on the same stream; both evaluated by clframe's evaluator on every experience."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from avalanche.benchmarks import nc_benchmark
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as make
        from avalanche.training import JointTraining
        from avalanche.training.plugins import EvaluationPlugin
    from clframe.scenarios.avalanche import from_avalanche

    n_classes = int(y_tr.max()) + 1
    bench = nc_benchmark(make(x_tr, y_tr), make(x_te, y_te), n_experiences=n_exp, task_labels=False,
                         fixed_class_order=list(range(n_classes)))
    scenario = from_avalanche(bench)
    torch.manual_seed(seed)
    dim = x_tr[0].numel()
    net = nn.Sequential(nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
    twin = nn.Sequential(nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
    twin.load_state_dict(net.state_dict())

    loader = StreamIterator(scenario.stream, bs, epochs, seed=seed)
    module = CLModule(Model(net[:3], Head(net[3])), {"joint": Joint(seed=seed)}, scenario.stream,
                      loader.steps_per_experience(), lr=lr)
    fit_loop(module, loader, "cpu", progress=False)
    ours = sum(module.acc_matrix[-1]) / n_exp

    torch.manual_seed(seed)
    strategy = JointTraining(twin, torch.optim.SGD(twin.parameters(), lr=lr), nn.CrossEntropyLoss(),
                             train_mb_size=bs, train_epochs=epochs, eval_mb_size=256, device="cpu",
                             evaluator=EvaluationPlugin(loggers=[]))
    strategy.train(bench.train_stream)
    twin.eval()
    theirs = sum(evaluate_many(lambda xb, tb: twin(xb), [e.eval for e in scenario.stream], batch_size=256)[0]) / n_exp
    return ours, theirs


def test_final_accuracy_agrees_with_avalanche_on_gaussian_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 10, generator=g) * 2.0
    y = torch.arange(1800) % 6
    x = centres[y] + torch.randn(1800, 10, generator=g) * 1.5
    ours, theirs = crosscheck(x[:1200], y[:1200], x[1200:], y[1200:], n_exp=3, hidden=32, epochs=2, bs=32,
                              lr=0.05, seed=0)
    assert ours > 0.8
    assert ours == pytest.approx(theirs, abs=0.03)


@pytest.mark.slow
def test_final_accuracy_agrees_with_avalanche_on_split_digits_over_three_seeds():
    from clframe.data.datasets import load_dataset

    ds = load_dataset("digits", None, False)
    pairs = [crosscheck(ds.x_train, ds.y_train, ds.x_test, ds.y_test, n_exp=5, hidden=100, epochs=3, bs=32, lr=0.1,
                        seed=seed) for seed in range(3)]
    ours, theirs = (sum(p[i] for p in pairs) / len(pairs) for i in (0, 1))
    assert ours == pytest.approx(theirs, abs=0.03), pairs


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_the_ranks_in_step_and_walk_the_union_once_per_pass(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    run_dir = tmp_path / "run"
    cmd = [str(Path(sys.executable).parent / "clframe"), "run", "scenario.n_experiences=2", "backbone.hidden=[32]",
           "logger.progress=false", "train.num_threads=1", "train.epochs=2", "trainer.strategy=ddp",
           "trainer.devices=2", "trainer.accelerator=cpu", "strategy=joint", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["world_size"] == 2 and s["rank_weight_max_abs_diff"] == 0.0
    n = sum(len(e.train) for e in build(compose(["scenario.n_experiences=2"])).scenario.stream)
    files = sorted((run_dir / "checkpoints").glob("step-*-rank*.ckpt"))
    last = max(int(p.name.split("-")[1]) for p in files)
    for r in (0, 1):
        state = torch.load(run_dir / "checkpoints" / f"step-{last:08d}-rank{r}.ckpt", weights_only=True)
        assert state["module"]["strategies"]["joint"]["consumed"] == 2 * n  # global samples, on every rank
