"""The Avalanche adapter: any Avalanche benchmark becomes a clframe scenario of tensors."""

from __future__ import annotations

import json
import re
import socket
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from clframe.scenarios.avalanche import avalanche, from_avalanche
from cli_helpers import run_main

from clframe.config import compose
from clframe.config.registry import SCENARIOS
from clframe.data.offline import offline
from clframe.errors import ConfigError, DatasetNotFoundError
from clframe.run.runner import build, run

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # avalanche warns about optional dependencies at import
    from avalanche.benchmarks import nc_benchmark
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

N_TRAIN, N_TEST, N_CLASSES = 60, 30, 6


def make_data() -> tuple[torch.Tensor, ...]:
    """Train and test tensors; pixel [0, 0, 0] holds a unique sample id (train >= 0, test < 0)."""
    g = torch.Generator().manual_seed(0)
    x_train = torch.rand(N_TRAIN, 1, 4, 4, generator=g)
    x_test = torch.rand(N_TEST, 1, 4, 4, generator=g)
    x_train[:, 0, 0, 0] = torch.arange(N_TRAIN, dtype=torch.float32)
    x_test[:, 0, 0, 0] = -1.0 - torch.arange(N_TEST, dtype=torch.float32)
    return x_train, torch.arange(N_TRAIN) % N_CLASSES, x_test, torch.arange(N_TEST) % N_CLASSES


def make_benchmark(task_labels: bool = False, n_experiences: int = 3):
    """A benchmark factory that a config can name by dotted path."""
    x_train, y_train, x_test, y_test = make_data()
    return nc_benchmark(
        _make_taskaware_tensor_classification_dataset(x_train, y_train),
        _make_taskaware_tensor_classification_dataset(x_test, y_test),
        n_experiences=n_experiences, task_labels=task_labels, shuffle=False, seed=0,
    )


CALLS: list[dict] = []
REAL_GETADDRINFO = socket.getaddrinfo


def recording_factory(n_experiences: int = 3):
    """A factory without ``dataset_root``; records its arguments."""
    CALLS.append({"n_experiences": n_experiences})
    return make_benchmark(n_experiences=n_experiences)


def rooted_factory(dataset_root: str | None = None, n_experiences: int = 3):
    """A factory with ``dataset_root``; records it and whether the network was reachable."""
    CALLS.append({"dataset_root": dataset_root, "network": socket.getaddrinfo is REAL_GETADDRINFO})
    return make_benchmark(n_experiences=n_experiences)


def downloading_factory(dataset_root: str = "unused", n_experiences: int = 3):
    """Like torchvision's MNIST: make the raw folder, then fetch (here: resolve a host)."""
    import os

    os.makedirs(os.path.join(dataset_root, "MNIST", "raw"), exist_ok=True)
    socket.getaddrinfo("example.invalid", 443)
    return make_benchmark(n_experiences=n_experiences)


def scenario_params(*overrides: str) -> dict:
    """The scenario section of ``scenario=avalanche`` composed with ``overrides``, as build gets it."""
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(compose(["scenario=avalanche", *overrides]).scenario, resolve=True)
    assert params.pop("name") == "avalanche"
    return params


@pytest.fixture(autouse=True)
def _no_avalanche_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("task_labels", [False, True])
def test_from_avalanche_keeps_experiences_classes_and_tasks(task_labels):
    s = from_avalanche(make_benchmark(task_labels))
    assert len(s.stream) == 3
    assert s.n_classes == N_CLASSES
    assert s.input_shape == (1, 4, 4)
    assert s.n_tasks == (3 if task_labels else 1)
    assert "avalanche" in s.name
    for i, e in enumerate(s.stream):
        assert e.index == i
        assert e.classes_in_this_experience == [2 * i, 2 * i + 1]
        assert set(e.train.y.tolist()) == set(e.eval.y.tolist()) == {2 * i, 2 * i + 1}
        assert len(e.train) == N_TRAIN // 3 and len(e.eval) == N_TEST // 3
        task = i if task_labels else 0
        assert e.task_label == task
        assert (e.train.t == task).all() and (e.eval.t == task).all()
        assert e.train.x.dtype == torch.float32 and e.train.y.dtype == torch.int64 and e.train.t.dtype == torch.int64


def test_samples_round_trip_unchanged():
    x_train, y_train, x_test, y_test = make_data()
    s = from_avalanche(make_benchmark())
    for part, x, y in (("train", x_train, y_train), ("eval", x_test, y_test)):
        xs = torch.cat([getattr(e, part).x for e in s.stream])
        ys = torch.cat([getattr(e, part).y for e in s.stream])
        ids = xs[:, 0, 0, 0]
        idx = (ids if part == "train" else -1 - ids).long()
        assert sorted(idx.tolist()) == list(range(len(y)))  # every sample exactly once
        assert torch.equal(xs, x[idx])
        assert torch.equal(ys, y[idx])


def test_max_samples_per_experience():
    s = from_avalanche(make_benchmark(), max_samples_per_experience=5)
    assert [len(e.train) for e in s.stream] == [5, 5, 5]
    assert [len(e.eval) for e in s.stream] == [5, 5, 5]


def test_mismatched_streams_are_a_config_error():
    bench = SimpleNamespace(train_stream=[object(), object()], test_stream=[object()])
    with pytest.raises(ConfigError, match="2 train but 1 test experiences"):
        from_avalanche(bench)


def test_scenario_builds_from_a_dotted_factory_with_args():
    s = avalanche(benchmark=f"{__name__}:make_benchmark", benchmark_args={"task_labels": True, "n_experiences": 2})
    assert len(s.stream) == 2
    assert s.n_tasks == 2
    assert [e.classes_in_this_experience for e in s.stream] == [[0, 1, 2], [3, 4, 5]]


def test_scenario_builds_from_a_dotted_benchmark_object(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "BENCH", make_benchmark(), raising=False)
    s = SCENARIOS.build("avalanche", {"benchmark": f"{__name__}.BENCH", "max_samples_per_experience": 4})
    assert len(s.stream) == 3 and len(s.stream[0].train) == 4


def test_a_missing_benchmark_names_it():
    with pytest.raises(ConfigError, match=r"scenario.benchmark '.*:no_such_factory'.*no attribute 'no_such_factory'"):
        avalanche(benchmark=f"{__name__}:no_such_factory")


@pytest.mark.parametrize("task_labels", [False, True])
def test_trains_end_to_end(tmp_path, task_labels):
    cfg = compose([
        "scenario=avalanche",
        f"scenario.benchmark={__name__}:make_benchmark",
        f"scenario.benchmark_args={{task_labels: {str(task_labels).lower()}}}",
        f"head={'multihead' if task_labels else 'linear'}",
        "backbone.hidden=[8]",
        "train.batch_size=10",
        "logger.progress=false",
    ])
    built = build(cfg)
    assert built.scenario.n_tasks == (3 if task_labels else 1)
    assert type(built.module.head).__name__ == ("MultiHead" if task_labels else "LinearHead")
    summary = run(cfg, tmp_path)
    assert (tmp_path / "summary.json").exists() and (tmp_path / "metrics.csv").exists()
    assert summary["steps"] == 6  # 3 experiences x 20 samples / batch of 10
    assert summary["samples"] == N_TRAIN
    assert len(summary["acc_matrix"]) == 3 and all(len(row) == 3 for row in summary["acc_matrix"])
    assert "avalanche" in summary["scenario"]


def test_unknown_benchmark_arg_is_a_config_error_naming_the_factorys_parameters():
    with pytest.raises(ConfigError, match=r"^Unknown key 'scenario.benchmark_args.dataset_root' for "
                                          rf"scenario.benchmark_args '{__name__}:make_benchmark'\. "
                                          r"Valid keys: task_labels, n_experiences\.$"):
        avalanche(benchmark=f"{__name__}:make_benchmark", benchmark_args={"dataset_root": "data/avalanche"})


def test_an_experience_without_samples_is_named():
    bench = make_benchmark()
    empty = SimpleNamespace(dataset=[], task_labels=[0], classes_in_this_experience=[])
    bench = SimpleNamespace(train_stream=list(bench.train_stream), test_stream=[*list(bench.test_stream)[:2], empty])
    with pytest.raises(ConfigError, match=r"The Avalanche benchmark's experience 2 \(test_stream\) has no samples: "
                                          r"every experience needs training and eval samples\."):
        from_avalanche(bench)
    with pytest.raises(ConfigError, match="The Avalanche benchmark has no experiences"):
        from_avalanche(SimpleNamespace(train_stream=[], test_stream=[]))


def test_max_samples_per_experience_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match=r"scenario.max_samples_per_experience must be >= 1, got 0"):
        avalanche(benchmark=f"{__name__}:make_benchmark", max_samples_per_experience=0)


def test_the_default_does_not_download_or_leave_directories(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    params = scenario_params()
    assert params["benchmark"] == "avalanche.benchmarks.classic:SplitMNIST" and not params["download"]
    with pytest.raises(DatasetNotFoundError) as e:
        SCENARIOS.build("avalanche", params)
    msg = str(e.value)
    assert "avalanche.benchmarks.classic:SplitMNIST" in msg
    assert "data/avalanche (scenario.data_root)" in msg and "scenario.download=true" in msg
    out = capsys.readouterr()
    assert "Failed to download" not in out.out + out.err
    assert list(tmp_path.iterdir()) == []  # no data/avalanche/MNIST/raw left behind
    assert socket.getaddrinfo is REAL_GETADDRINFO


def test_a_user_factory_gets_no_dataset_root_from_the_config():
    CALLS.clear()
    params = scenario_params(f"scenario.benchmark={__name__}:recording_factory",
                             "scenario.benchmark_args={n_experiences: 2}")
    assert "dataset_root" not in params["benchmark_args"]
    s = SCENARIOS.build("avalanche", params)
    assert CALLS == [{"n_experiences": 2}] and len(s.stream) == 2


def test_a_user_factory_with_dataset_root_gets_only_what_the_user_gives(tmp_path):
    CALLS.clear()
    params = scenario_params(f"scenario.benchmark={__name__}:rooted_factory", f"scenario.data_root={tmp_path}",
                             "scenario.benchmark_args={n_experiences: 3}")
    SCENARIOS.build("avalanche", params)
    # its own default, not scenario.data_root (which is Avalanche's own benchmarks'); download=false: guarded
    assert CALLS == [{"dataset_root": None, "network": False}]
    avalanche(benchmark=f"{__name__}:rooted_factory", benchmark_args={"dataset_root": "mine"}, download=True)
    assert CALLS[1] == {"dataset_root": "mine", "network": True}  # given in benchmark_args; download=true: open


def test_an_avalanche_factory_gets_the_data_root_but_not_the_default_benchmarks_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fmnist = "avalanche.benchmarks.classic:SplitFMNIST"
    # n_experiences: 5 belongs to the default SplitMNIST only
    with pytest.raises(ConfigError, match=rf"^scenario.benchmark_args '{fmnist}' needs "
                                          r"'scenario.benchmark_args.n_experiences' \(int\)\.$"):
        avalanche(benchmark=fmnist)
    with pytest.raises(DatasetNotFoundError, match=r"put its dataset under here \(scenario\.data_root\)"):
        avalanche(benchmark=fmnist, benchmark_args={"n_experiences": 5}, data_root="here")
    assert list(tmp_path.iterdir()) == []


def test_the_default_benchmark_keeps_its_experiences_beside_the_users_arguments():
    from clframe.scenarios.avalanche import DEFAULT_BENCHMARK, factory_args

    def split_mnist(n_experiences: int, seed: int | None = None, dataset_root: str | None = None) -> None:
        """Stands in for SplitMNIST's signature."""

    assert factory_args(split_mnist, DEFAULT_BENCHMARK, {"seed": 1}, "data/avalanche") == {
        "n_experiences": 5, "seed": 1, "dataset_root": "data/avalanche"}
    assert factory_args(split_mnist, DEFAULT_BENCHMARK, {"n_experiences": 2}, "d")["n_experiences"] == 2
    assert factory_args(split_mnist, "my_pkg.benches:split_mnist", {"n_experiences": 2}, "d") == {"n_experiences": 2}


def test_arguments_for_a_benchmark_object_are_refused(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "BENCH", make_benchmark(), raising=False)
    with pytest.raises(ConfigError, match=r"is a benchmark object, not a factory, so it takes no "
                                          r"scenario.benchmark_args \(got n_experiences\)"):
        avalanche(benchmark=f"{__name__}.BENCH", benchmark_args={"n_experiences": 2})


def test_a_refused_download_names_the_benchmark_and_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a factory of the user's own looks under its own default dataset_root, not scenario.data_root
    with pytest.raises(DatasetNotFoundError, match=re.escape(f"'{__name__}:downloading_factory'") + r".*under unused "
                       r"\(its dataset_root default; \+scenario\.benchmark_args\.dataset_root sets it\)"):
        avalanche(benchmark=f"{__name__}:downloading_factory")
    with pytest.raises(DatasetNotFoundError, match=r"under here \(scenario\.benchmark_args\.dataset_root\)"):
        avalanche(benchmark=f"{__name__}:downloading_factory", benchmark_args={"dataset_root": "here"})
    assert list(tmp_path.iterdir()) == []


def test_offline_never_downloads_even_when_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with offline(), pytest.raises(DatasetNotFoundError, match=r"`clframe validate` never downloads.*clframe run"):
        avalanche(benchmark=f"{__name__}:downloading_factory", download=True)
    assert list(tmp_path.iterdir()) == []


# -- the newcomer's case: a benchmark factory of one's own package, through the command line ----

USER_BENCHES = '''
import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as tensors

CALLS = []


def tiny_split(n_tasks: int = 2, per_class: int = 10, root: str = "nowhere"):
    """Two classes per experience over random 8-feature inputs; records what it was called with."""
    CALLS.append({"n_tasks": n_tasks, "per_class": per_class, "root": root})
    g = torch.Generator().manual_seed(0)
    y = torch.arange(2 * n_tasks).repeat(per_class)
    data = [tensors(torch.rand(len(y), 8, generator=g) + y[:, None], y) for _ in range(2)]
    return nc_benchmark(*data, n_experiences=n_tasks, task_labels=False, shuffle=False, seed=0)
'''


@pytest.fixture
def user_factory(user_package, tmp_path, monkeypatch) -> str:
    """The dotted path of a user's benchmark factory (its package on sys.path, the cwd a fresh directory)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # clframe run hands sys.argv to Hydra
    return f"{user_package({'benches.py': USER_BENCHES})}.benches:tiny_split"


def test_a_users_factory_runs_with_exactly_its_own_arguments(user_factory, capsys):
    code, _, err = run_main(["run", "scenario=avalanche", f"scenario.benchmark={user_factory}",
                             "+scenario.benchmark_args.n_tasks=3", "+scenario.benchmark_args.per_class=6",
                             "backbone.hidden=[8]", "train.epochs=1", "logger.progress=false", "hydra.run.dir=run"],
                            capsys)
    assert code == 0, err
    calls = sys.modules[user_factory.split(":")[0]].CALLS
    assert calls and all(c == {"n_tasks": 3, "per_class": 6, "root": "nowhere"} for c in calls)  # no dataset_root
    summary = json.loads((Path("run") / "summary.json").read_text())
    assert len(summary["acc_matrix"]) == 3 and summary["samples"] == 3 * 2 * 6


def test_a_wrong_argument_for_a_users_factory_names_its_parameters(user_factory, capsys):
    code, _, err = run_main(["run", "scenario=avalanche", f"scenario.benchmark={user_factory}",
                             "+scenario.benchmark_args.n_experiences=3", "logger.progress=false"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: Unknown key 'scenario.benchmark_args.n_experiences' for scenario.benchmark_args "
                          f"'{user_factory}'.")
    assert err.rstrip().endswith("Valid keys: n_tasks, per_class, root.")
