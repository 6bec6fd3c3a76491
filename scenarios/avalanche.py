"""Any Avalanche benchmark as a clframe scenario (materialised once into tensors)."""

from __future__ import annotations

import inspect
import warnings
from os import PathLike
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


DEFAULT_BENCHMARK = "avalanche.benchmarks.classic:SplitMNIST"
# the default benchmark's own argument (the usual 5 x 2 classes); no other factory gets it
DEFAULT_ARGS = {"n_experiences": 5}


def _dataset_root(factory: Any) -> inspect.Parameter | None:
    """The factory's ``dataset_root`` parameter, if it has one."""
    try:
        return inspect.signature(factory).parameters.get("dataset_root")
    except (TypeError, ValueError):  # no signature to inspect (a builtin)
        return None


def _is_avalanches(benchmark: str) -> bool:
    """Whether ``benchmark`` is one of Avalanche's own (``avalanche.*``): its ``dataset_root`` is
    where its data lives, so ``data_root`` is passed to it."""
    return benchmark.replace(":", ".").split(".")[0] == "avalanche"


def factory_args(factory: Any, benchmark: str, args: dict[str, Any] | None, data_root: str) -> dict[str, Any]:
    """The keyword arguments ``factory`` is called with: exactly ``args`` for a factory of the user's
    own; Avalanche's own factories also get ``data_root`` as ``dataset_root`` and the default
    benchmark its ``n_experiences``, unless ``args`` sets them.

    Args:
        factory: the benchmark factory.
        benchmark: its dotted path (``scenario.benchmark``).
        args: ``scenario.benchmark_args`` (None: none).
        data_root: ``scenario.data_root``.
    """
    args = dict(args or {})
    if benchmark == DEFAULT_BENCHMARK:
        args = {**DEFAULT_ARGS, **args}
    # checked before data_root is added: an unknown key is one the user wrote (or the default
    # benchmark's), and the message lists this factory's own parameters
    check_params("scenario.benchmark_args", benchmark, factory, args)
    if _is_avalanches(benchmark) and "dataset_root" not in args and _dataset_root(factory) is not None:
        args["dataset_root"] = data_root
    return args


def _call(factory: Any, benchmark: str, args: dict[str, Any], user_args: dict[str, Any], download: bool) -> Any:
    # without an allowed download, no network (and no empty directories left under the root)
    if download and downloads_allowed():
        return factory(**args)
    root, key = args.get("dataset_root"), "scenario.data_root"
    if "dataset_root" in user_args:
        key = "scenario.benchmark_args.dataset_root"
    elif root is None and (param := _dataset_root(factory)) is not None and isinstance(param.default, (str, PathLike)):
        # a factory of the user's own looks where its default says
        root, key = param.default, "its dataset_root default; +scenario.benchmark_args.dataset_root sets it"
    where = f"put its dataset under {root} ({key})" if root is not None else "put its dataset on disk"
    with no_network(f"Avalanche benchmark '{benchmark}'", f"{where} or allow the download with scenario.download=true",
                    root=root):
        return factory(**args)


@SCENARIOS.register("avalanche")
def avalanche(
    benchmark: str = DEFAULT_BENCHMARK,
    benchmark_args: dict[str, Any] | None = None,
    max_samples_per_experience: int | None = None,
    data_root: str = "data/avalanche",
    download: bool = False,
) -> Scenario:
    """Build an Avalanche benchmark and convert it. A factory of your own is called with exactly
    ``benchmark_args``: ``scenario.benchmark=my_pkg.benches:my_split +scenario.benchmark_args.n_tasks=3``
    (an argument it does not take is refused with the factory's parameters).

    Args:
        benchmark: dotted path to a benchmark factory (called with ``benchmark_args``) or to
            a benchmark object (default ``avalanche.benchmarks.classic:SplitMNIST``; its data
            must be under ``data_root``, or ``download`` true).
        benchmark_args: keyword arguments for the factory (default None: none; the default
            SplitMNIST adds ``n_experiences: 5`` unless they set it).
        max_samples_per_experience: keep at most this many samples per experience, at least 1 (default: all).
        data_root: passed as ``dataset_root`` to Avalanche's own factories (``avalanche.*``) that take
            one, unless ``benchmark_args`` sets it; never to a factory of yours (default ``data/avalanche``).
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
            args = factory_args(factory, benchmark, benchmark_args, data_root)
            bench = _call(factory, benchmark, args, benchmark_args or {}, download)
        elif benchmark_args:
            raise ConfigError(f"scenario.benchmark '{benchmark}' is a benchmark object, not a factory, so it takes no "
                              f"scenario.benchmark_args (got {', '.join(benchmark_args)}). Name a factory, or drop "
                              "the arguments.")
        else:
            bench = factory
    return from_avalanche(bench, max_samples_per_experience)
