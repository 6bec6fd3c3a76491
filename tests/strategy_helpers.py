"""Helpers shared by the tests of the penalty strategies (SI, MAS, LwF): a linear head, a tiny blob
stream, the flat parameter vector, and the cross-check against Avalanche's Naive with plugins."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from clframe.core.module import CLModule
from clframe.data.iterator import StreamIterator
from clframe.data.stream import Experience, Stream, TensorData
from clframe.evaluation.evaluate import evaluate_many
from clframe.models.model import Model
from clframe.run.engines import fit_loop


class Head(nn.Module):
    """A linear layer as a clframe head (task labels unused)."""

    def __init__(self, fc: nn.Module) -> None:
        super().__init__()
        self.fc = fc

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.fc(h)


def blob_stream(n_exp: int = 2, per_class: int = 40, dim: int = 4, seed: int = 0) -> Stream:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(2 * n_exp, dim, generator=g) * 3

    def data(classes: list[int]) -> TensorData:
        y = torch.tensor(classes).repeat_interleave(per_class)
        return TensorData(centres[y] + torch.randn(len(y), dim, generator=g), y, torch.zeros_like(y))

    return Stream([Experience(i, data([2 * i, 2 * i + 1]), data([2 * i, 2 * i + 1]), [2 * i, 2 * i + 1])
                   for i in range(n_exp)])


def flat(module: CLModule) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def crosscheck(ours: dict, plugins: list, x_tr, y_tr, x_te, y_te, n_exp: int, hidden: int, epochs: int, bs: int,
               lr: float, seed: int) -> tuple[float, float]:
    """Final average accuracy of clframe with ``ours`` and Avalanche's Naive with ``plugins``, from the same
    initial weights on the same class-incremental stream (nc_benchmark over tensors); both evaluated by
    clframe's evaluator."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from avalanche.benchmarks import nc_benchmark
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as make
        from avalanche.training import Naive
        from avalanche.training.plugins import EvaluationPlugin
    from clframe.scenarios.avalanche import from_avalanche

    n_classes = int(y_tr.max()) + 1
    bench = nc_benchmark(make(x_tr, y_tr), make(x_te, y_te), n_experiences=n_exp, task_labels=False,
                         fixed_class_order=list(range(n_classes)))
    scenario = from_avalanche(bench)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(x_tr[0].numel(), hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
    twin = copy.deepcopy(net)
    loader = StreamIterator(scenario.stream, bs, epochs, seed=seed)
    module = CLModule(Model(net[:3], Head(net[3])), ours, scenario.stream, loader.steps_per_experience(), lr=lr)
    fit_loop(module, loader, "cpu", progress=False)
    torch.manual_seed(seed)
    strategy = Naive(twin, torch.optim.SGD(twin.parameters(), lr=lr), nn.CrossEntropyLoss(), train_mb_size=bs,
                     train_epochs=epochs, eval_mb_size=256, device="cpu", evaluator=EvaluationPlugin(loggers=[]),
                     plugins=plugins)
    for exp in bench.train_stream:
        strategy.train(exp)
    twin.eval()
    theirs = evaluate_many(lambda xb, tb: twin(xb), [e.eval for e in scenario.stream], batch_size=256)[0]
    return sum(module.acc_matrix[-1]) / n_exp, sum(theirs) / n_exp


def blobs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 10, generator=g) * 2.0
    y = torch.arange(1800) % 6
    x = centres[y] + torch.randn(1800, 10, generator=g) * 1.5
    return x[:1200], y[:1200], x[1200:], y[1200:]


# -- the memory-based strategies (GEM, iCaRL, GDumb) ------------------------------------------------

def blob_benchmark(seed: int = 0, n: int = 1200, n_train: int = 900):
    """Three Avalanche experiences of two Gaussian-blob classes in 10 dimensions, ``n`` samples of which
    the first ``n_train`` train and the rest test (a factory a config names by dotted path:
    ``scenario.benchmark=strategy_helpers:blob_benchmark``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from avalanche.benchmarks import nc_benchmark
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as make
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, 10, generator=g) * 1.5
    y = torch.arange(n) % 6
    x = centres[y] + torch.randn(len(y), 10, generator=g)
    k = n_train
    return nc_benchmark(make(x[:k], y[:k]), make(x[k:], y[k:]), n_experiences=3, task_labels=False,
                        fixed_class_order=list(range(6)))


def split_digits_benchmark():
    """Split digits as an Avalanche benchmark: 5 experiences of 2 classes, flat inputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from avalanche.benchmarks import nc_benchmark
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as make
    from clframe.data.datasets.digits import digits

    d = digits()
    return nc_benchmark(make(d.x_train.flatten(1), d.y_train), make(d.x_test.flatten(1), d.y_test), n_experiences=5,
                        task_labels=False, fixed_class_order=list(range(10)))


def avalanche_final_accuracy(strategy, seed: int, tests: list) -> float:
    """Train Avalanche ``strategy`` on ``blob_benchmark(seed)``'s stream, then score its model on ``tests``
    (clframe's eval data of the same stream) with clframe's evaluator: the mean final accuracy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. Avalanche 0.6's GDumb calls its own deprecated buffer update
        for exp in blob_benchmark(seed).train_stream:
            strategy.train(exp)
    strategy.model.eval()
    return float(np.mean(evaluate_many(lambda xb, tb: strategy.model(xb), tests, batch_size=256)[0]))


class WithoutTask(nn.Module):
    """A clframe model (``model(x, t)``) as a plain ``model(x)``, for Avalanche."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x, torch.zeros(len(x), dtype=torch.long))


def interrupted_and_resumed(overrides: list[str], tmp_path,
                            pick: Callable[[dict, list[int]], int]) -> tuple[dict, dict]:
    """Run ``overrides`` to the end; copy the run as if it had been killed after writing the checkpoint of
    step ``pick(summary, checkpoint_steps)`` and resume the copy. Assert that the resumed run's summary
    (timings aside), metrics.csv and final weights equal the uninterrupted run's; return the module
    states of both runs' last checkpoints, for the strategy's own state to be compared."""
    import json
    import shutil

    from clframe.checkpoint.files import list_checkpoints, load_checkpoint
    from clframe.config import compose
    from clframe.run.results import TIMING_KEYS
    from clframe.run.runner import run

    ref_dir, copy_dir = tmp_path / "ref", tmp_path / "copy"
    ref = run(compose(overrides), ref_dir)
    steps = [s for s, _ in list_checkpoints(ref_dir)]
    k = pick(ref, steps)
    assert k in steps, f"no checkpoint at step {k}: {steps}"
    shutil.copytree(ref_dir, copy_dir)
    for s, p in list_checkpoints(copy_dir):
        if s > k:
            p.unlink()
    for name in ("summary.json", "metrics.csv"):
        (copy_dir / name).unlink()
    resumed = run(compose([*overrides, f"resume={copy_dir}"]), tmp_path / "unused")
    same = {key: v for key, v in ref.items() if key not in TIMING_KEYS and key not in ("run_dir", "resumed_from")}
    assert json.dumps(same, sort_keys=True) == json.dumps({key: resumed[key] for key in same}, sort_keys=True)
    assert (copy_dir / "metrics.csv").read_bytes() == (ref_dir / "metrics.csv").read_bytes()
    a = load_checkpoint(list_checkpoints(ref_dir)[-1][1])["module"]
    b = load_checkpoint(list_checkpoints(copy_dir)[-1][1])["module"]
    for key, v in a["model"].items():
        assert torch.equal(v, b["model"][key]), key
    return a, b


def inside_second_of_three(ref: dict, steps: list[int]) -> int:
    """A checkpoint step inside the second of three equal experiences (past its first 7 steps)."""
    return next(s for s in steps if s > ref["steps"] // 3 + 7)


def at(where: str) -> Callable[[dict, list[int]], int]:
    """``interrupted_and_resumed``'s pick: the end of the first of three experiences (``boundary``) or a
    step inside the second (``mid_exp1``)."""
    return lambda ref, steps: ref["steps"] // 3 if where == "boundary" else inside_second_of_three(ref, steps)


# -- the replay strategies (DER, DER++, ER-ACE) -----------------------------------------------------

class PaperBuffer:
    """Mammoth's ``Buffer``, written independently: reservoir sampling one sample at a time, draws
    without replacement, with NumPy's generator."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seen, self.rng, self.data = size, 0, np.random.default_rng(seed), None

    def add(self, *tensors: torch.Tensor) -> None:
        if self.data is None:
            self.data = [t.new_zeros((self.size, *t.shape[1:])) for t in tensors]
        for i in range(len(tensors[0])):
            j = self.seen if self.seen < self.size else int(self.rng.integers(0, self.seen + 1))
            if j < self.size:
                for store, t in zip(self.data, tensors):
                    store[j] = t[i]
            self.seen += 1

    def get(self, n: int) -> list[torch.Tensor]:
        k = min(self.seen, self.size)
        idx = torch.from_numpy(self.rng.choice(k, size=min(n, k), replace=False))
        return [d[idx] for d in self.data]


def final_acc_by_strategy(overrides: list[str], strategies: dict[str, list[str]]) -> dict[str, float]:
    """The final average accuracy of a run of ``overrides`` with each ``strategy=<key>`` and its own
    extra overrides (``{"naive": [], "der": ["strategies.der.alpha=1.0"]}``), by key."""
    from clframe.config import compose
    from clframe.evaluation.metrics import summary_metrics
    from clframe.run.runner import build, fit

    acc = {}
    for name, extra in strategies.items():
        built = build(compose([*overrides, f"strategy={name}", *extra]))
        fit(built)
        acc[name] = summary_metrics(built.module.acc_matrix)["final_avg_acc"]
    return acc


def trained_with_twin(scenario, strategies: dict, seed: int, batch_size: int, epochs: int,
                      lr: float) -> tuple[CLModule, nn.Sequential]:
    """The cross-checks' clframe side: an MLP (64, 64, ReLU) and a linear head, seeded by ``seed``, trained
    with ``strategies`` on ``scenario``'s stream in unshuffled batches by SGD; and an untrained
    ``nn.Sequential(backbone, head)`` copy of its initial weights, for the Avalanche side."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Linear(scenario.input_shape[0], 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
    backbone.out_features = 64
    fc = nn.Linear(64, scenario.n_classes)
    twin = nn.Sequential(copy.deepcopy(backbone), copy.deepcopy(fc))
    loader = StreamIterator(scenario.stream, batch_size, epochs, seed=seed, shuffle=False)
    module = CLModule(Model(backbone, Head(fc)), strategies, scenario.stream, loader.steps_per_experience(), lr=lr)
    fit_loop(module, loader, "cpu", progress=False)
    return module, twin
