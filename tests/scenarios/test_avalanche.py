"""The Avalanche adapter: any Avalanche benchmark becomes a clframe scenario of tensors."""

from __future__ import annotations

import re
import socket
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch
from clframe.scenarios.avalanche import avalanche, from_avalanche

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


def test_unknown_benchmark_arg_is_a_config_error():
    with pytest.raises(ConfigError, match="dataset_root"):
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


def test_a_factory_with_dataset_root_gets_the_data_root(tmp_path):
    CALLS.clear()
    params = scenario_params(f"scenario.benchmark={__name__}:rooted_factory", f"scenario.data_root={tmp_path}",
                             "scenario.benchmark_args={n_experiences: 3}")
    SCENARIOS.build("avalanche", params)
    assert CALLS == [{"dataset_root": str(tmp_path), "network": False}]  # download=false: guarded
    avalanche(benchmark=f"{__name__}:rooted_factory", benchmark_args={"dataset_root": "mine"}, download=True)
    assert CALLS[1] == {"dataset_root": "mine", "network": True}  # benchmark_args wins; download=true: open


def test_a_refused_download_names_the_benchmark_and_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=re.escape(f"'{__name__}:downloading_factory'") +
                       r".*under data/avalanche \(scenario\.data_root\)"):
        avalanche(benchmark=f"{__name__}:downloading_factory")
    with pytest.raises(DatasetNotFoundError, match=r"under here \(scenario\.benchmark_args\.dataset_root\)"):
        avalanche(benchmark=f"{__name__}:downloading_factory", benchmark_args={"dataset_root": "here"})
    assert list(tmp_path.iterdir()) == []


def test_offline_never_downloads_even_when_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with offline(), pytest.raises(DatasetNotFoundError, match=r"`clframe validate` never downloads.*clframe run"):
        avalanche(benchmark=f"{__name__}:downloading_factory", download=True)
    assert list(tmp_path.iterdir()) == []
