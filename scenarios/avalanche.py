"""Any Avalanche benchmark as a clframe scenario (materialised once into tensors)."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch

from clframe.config.registry import SCENARIOS, check_params, import_dotted
from clframe.data.offline import downloads_allowed, no_network
from clframe.data.stream import Experience, Scenario, Stream, TensorData
from clframe.errors import ConfigError


def _materialise(dataset: Any, max_samples: int | None, batch_size: int, what: str = "an experience") -> TensorData:
    # Avalanche datasets yield (x, y, task) per sample; this per-sample pass happens once,
    # here, instead of on every training step
    from torch.utils.data import DataLoader, Subset

    if max_samples is not None and len(dataset) > max_samples:
        dataset = Subset(dataset, range(max_samples))
    xs, ys, ts = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        xs.append(torch.as_tensor(batch[0]).float())
        ys.append(torch.as_tensor(batch[1]).long())
        ts.append(torch.as_tensor(batch[2]).long() if len(batch) > 2 else torch.zeros_like(ys[-1]))
    if not xs:
        raise ConfigError(f"The Avalanche benchmark's {what} has no samples: every experience needs training and "
                          "eval samples. Change the benchmark or its settings (scenario.benchmark, "
                          "scenario.benchmark_args).")
    return TensorData(torch.cat(xs), torch.cat(ys), torch.cat(ts))


def from_avalanche(bench: Any, max_samples_per_experience: int | None = None, batch_size: int = 1024) -> Scenario:
    """Convert an Avalanche benchmark (with ``train_stream`` and ``test_stream`` of equal length).

    Args:
        bench: the Avalanche benchmark object.
        max_samples_per_experience: keep at most this many samples per experience (default: all).
        batch_size: loader batch size used once for the conversion (default 1024).
    """
    train, test = list(bench.train_stream), list(bench.test_stream)
    if len(train) != len(test):
        raise ConfigError(f"Avalanche benchmark has {len(train)} train but {len(test)} test experiences; "
                          "clframe pairs them by index.")
    if not train:
        raise ConfigError("The Avalanche benchmark has no experiences. Change the benchmark or its settings "
                          "(scenario.benchmark, scenario.benchmark_args).")
    exps = []
    for i, (tr, te) in enumerate(zip(train, test)):
        task = tr.task_labels[0] if getattr(tr, "task_labels", None) else 0
        exps.append(Experience(
            index=i,
            train=_materialise(tr.dataset, max_samples_per_experience, batch_size, f"experience {i} (train_stream)"),
            eval=_materialise(te.dataset, max_samples_per_experience, batch_size, f"experience {i} (test_stream)"),
            classes_in_this_experience=sorted(int(c) for c in tr.classes_in_this_experience),
            task_label=int(task),
        ))
    labels = torch.cat([e.train.y for e in exps])
    tasks = torch.cat([e.train.t for e in exps])
    n_classes = int(getattr(bench, "n_classes", 0) or int(labels.max()) + 1)
    return Scenario(Stream(exps), n_classes=n_classes, input_shape=tuple(exps[0].train.x.shape[1:]),
                    n_tasks=int(tasks.max()) + 1, name=f"avalanche:{type(bench).__name__} ({len(exps)} experiences)")


def _takes_dataset_root(factory: Any) -> bool:
    try:
        return "dataset_root" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to inspect (a builtin)
        return False


def _call(factory: Any, benchmark: str, args: dict[str, Any], data_root: str, download: bool) -> Any:
    # data_root becomes the factory's dataset_root; without an allowed download, no network
    check_params("scenario.benchmark_args", benchmark, factory, args)
    key = "scenario.benchmark_args.dataset_root" if "dataset_root" in args else "scenario.data_root"
    if "dataset_root" not in args and _takes_dataset_root(factory):
        args = {**args, "dataset_root": data_root}
    if download and downloads_allowed():
        return factory(**args)
    root = args.get("dataset_root")
    where = f"put its dataset under {root} ({key})" if root is not None else "put its dataset on disk"
    with no_network(f"Avalanche benchmark '{benchmark}'", f"{where} or allow the download with scenario.download=true",
                    root=root):
        return factory(**args)


DEFAULT_BENCHMARK = "avalanche.benchmarks.classic:SplitMNIST"
# the default benchmark's own argument: its number of experiences (the usual 5 x 2 classes)
DEFAULT_ARGS = {"n_experiences": 5}


@SCENARIOS.register("avalanche")
def avalanche(
    benchmark: str = DEFAULT_BENCHMARK,
    benchmark_args: dict[str, Any] | None = None,
    max_samples_per_experience: int | None = None,
    data_root: str = "data/avalanche",
    download: bool = False,
) -> Scenario:
    """Build an Avalanche benchmark and convert it.

    Args:
        benchmark: dotted path to a benchmark factory (called with ``benchmark_args``) or to
            a benchmark object (default ``avalanche.benchmarks.classic:SplitMNIST``; its data
            must be under ``data_root``, or ``download`` true).
        benchmark_args: keyword arguments for the factory (default None: ``{n_experiences: 5}`` for the
            default SplitMNIST, none for any other factory).
        max_samples_per_experience: keep at most this many samples per experience, at least 1 (default: all).
        data_root: passed as ``dataset_root`` to a factory that takes one, unless
            ``benchmark_args`` sets it (default ``data/avalanche``).
        download: let the factory download missing data (default False: any network access
            stops the build with a ``DatasetNotFoundError``; never allowed under ``clframe validate``).
    """
    if max_samples_per_experience is not None and max_samples_per_experience < 1:
        raise ConfigError(f"scenario.max_samples_per_experience must be >= 1, got {max_samples_per_experience}: "
                          "every experience needs samples. Set it to a positive number, or to null to keep all.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # avalanche warns about optional solvers at import
        factory = import_dotted(benchmark, "scenario.benchmark")
        if callable(factory):
            if benchmark_args is None:
                benchmark_args = dict(DEFAULT_ARGS) if benchmark == DEFAULT_BENCHMARK else {}
            bench = _call(factory, benchmark, benchmark_args, data_root, download)
        else:
            bench = factory
    return from_avalanche(bench, max_samples_per_experience)
