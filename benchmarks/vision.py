"""split_cifar10's training step: clframe vs a plain PyTorch loop doing the same work, in one process.

    python benchmarks/vision.py [--device cpu|cuda] [--nf 20] [--batch-size 32] [--steps 50] [--repeats 5]
                                [--samples 500] [--data-root DIR] [--strategy naive|replay]
                                [--precision 32-true|bf16-mixed|16-mixed] [--channels-last] [--compile]
                                [--short] [--json PATH]
    # DER's full width on a GPU (benchmarks/gpu_check.sh runs these):
    python benchmarks/vision.py --device cuda --nf 64 --precision bf16-mixed --channels-last --json vision.json

The work (configs/experiment/split_cifar10.yaml, the step of a run): 5 class-incremental experiences of
2 CIFAR-10 classes each, uint8 images [3, 32, 32] resident on the device, ResNet-18 with the CIFAR stem
(``--nf``: 20 by default, the reduced form that is affordable on one CPU thread; 64 is DER's) and a
linear head over the 10 classes, batch 32, SGD lr 0.03 without momentum, each batch augmented on the
device by ``ImageAugment(4, True)`` (per-sample crop with zero padding 4 and flip; replayed samples too)
and normalised inside the model by ``Normalize`` with CIFAR-10's mean and std; ``--precision`` autocasts
the forward pass and the loss (``16-mixed`` with a ``GradScaler``), ``--channels-last`` lays the backbone
and its inputs out channels-last, ``--compile`` runs ``backbone.compile()``, in both loops.
``--strategy replay``: a reservoir buffer of 200 samples and 32 replayed samples per step (the default,
``naive``, trains on the stream's batches alone).

- ``plain``: a hand-written loop: each experience's samples shuffled (one gather), then per step the
  batch slice, replayed samples concatenated (clframe's ``ReservoirBuffer``, as benchmarks/online.py),
  the same ``ImageAugment`` and ``Normalize``, forward, cross-entropy, backward, SGD step.
- ``clframe``: a ``CLModule`` built as a run builds it (``clframe.run.build.build_model``, the module's
  ``augment`` and ``precision``; ``strategy=replay`` is clframe's ``Replay``) driven by clframe's own
  engine, ``clframe.run.engines.fit_loop`` (the default for one process), the continual evaluator off,
  the boundary evaluation on ``--eval-samples`` test images per experience.

One repetition trains both over the same freshly drawn ``--steps`` batches (rounded up to a multiple of
the 5 experiences) on the same, persistent model weights (built and compiled once), with a new optimizer
(and buffer). The headline figure times the steps: for clframe from the engine's ``on_train_start`` (after
``on_fit_start``'s evaluation of the untrained model) to the end of the last step, which includes the 4
experience boundaries inside the stream (their events and tiny evaluations) and the module's loss reads
(every ``--log-every`` steps, a host sync); ``clframe (whole fit)`` times all of ``fit_loop``. On CUDA every
timed block starts and ends with ``torch.cuda.synchronize()``. Medians of interleaved repetitions after
one warm-up each (compilation happens there); on the CPU one thread.

Memory: the bytes of the in-memory uint8 dataset (train + test images and labels) against what float32
images would take, and the process's RSS increase from loading it (the real CIFAR-10 under
``--data-root``: ``resource.getrusage`` peak, and psutil's current RSS when psutil is installed); on CUDA
each loop's peak allocated memory (which includes the dataset resident on the device).

Data: random CIFAR-shaped uint8 images, ``--samples`` per class for training (a fifth of it for testing),
or CIFAR-10 itself from ``--data-root`` (the python-version batches; throughput does not depend on the
pixels). ``--json PATH`` writes the figures in the house format (benchmarks/figures.py, for
benchmarks/bench_all.py) and every number of the run (settings, each repetition, the medians, memory)
beside it, in ``<PATH stem>.details.json`` (or ``--details PATH``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from clframe.strategies.replay import Replay
from torch import nn

from clframe.core.module import CLModule
from clframe.data.augment import ImageAugment
from clframe.data.buffers import ReservoirBuffer
from clframe.data.datasets import ImageRecipe
from clframe.data.datasets.cifar import LAYOUT, load_cifar
from clframe.data.iterator import StreamIterator
from clframe.data.stream import Experience, Scenario, Stream, TensorData
from clframe.models.backbones.resnet import ResNet18
from clframe.models.preprocess import Normalize
from clframe.run.build import build_model
from clframe.run.engines import fit_loop
from clframe.run.runner import quiet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure, add_args, report  # noqa: E402

N_EXP, N_CLASSES, SHAPE = 5, 10, (3, 32, 32)
MEM, REPLAYED = 200, 32  # split_cifar10's replay settings
RECIPE: ImageRecipe = LAYOUT["cifar10"]["image"]  # CIFAR-10's mean/std, crop padding 4, flip
TARGET = 0.85  # clframe's step against the plain loop's, samples/s (the target of issue 23)


@dataclass
class Setup:
    device: torch.device
    nf: int
    batch: int
    lr: float
    precision: str
    channels_last: bool
    compile: bool
    replay: bool
    log_every: int
    eval_samples: int


# one experience: train images, labels, test images, labels (on the device)
Exp = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int | None:
    """The process's current resident set size (psutil), None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def max_rss_bytes() -> int:
    """The process's peak resident set size so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def load_data(data_root: str | None, per_class: int) -> tuple[tuple[torch.Tensor, ...], str, dict[str, Any]]:
    """``x_train, y_train, x_test, y_test`` (uint8 images, int64 labels, on the CPU), where they came
    from, and what they take in memory."""
    rss0, peak0 = rss_bytes(), max_rss_bytes()
    if data_root is not None:
        d = load_cifar("cifar10", data_root, download=False)
        data, source = (d.x_train, d.y_train, d.x_test, d.y_test), f"CIFAR-10 from {data_root}"
    else:
        g = torch.Generator().manual_seed(0)
        per_test = max(1, per_class // 5)
        data = (torch.randint(0, 256, (N_CLASSES * per_class, *SHAPE), generator=g, dtype=torch.uint8),
                torch.arange(N_CLASSES).repeat_interleave(per_class),
                torch.randint(0, 256, (N_CLASSES * per_test, *SHAPE), generator=g, dtype=torch.uint8),
                torch.arange(N_CLASSES).repeat_interleave(per_test))
        source = f"random uint8 CIFAR-shaped images, {per_class} per class (train), {per_test} (test)"
    rss1, peak1 = rss_bytes(), max_rss_bytes()
    images = data[0].nbytes + data[2].nbytes
    memory = {
        "train_images": len(data[1]), "test_images": len(data[3]),
        "uint8_image_bytes": images, "label_bytes": data[1].nbytes + data[3].nbytes,
        "float32_image_bytes": images * 4, "dataset_bytes": images + data[1].nbytes + data[3].nbytes,
        "rss_increase_bytes": None if rss0 is None else rss1 - rss0,
        "peak_rss_increase_bytes": peak1 - peak0,
    }
    return data, source, memory


def experiences(data: tuple[torch.Tensor, ...], device: torch.device) -> list[Exp]:
    """The 5 class-incremental experiences (classes 2i and 2i + 1, the official order), on ``device``."""
    x, y, xt, yt = data
    out = []
    for i in range(N_EXP):
        tr, te = (y // 2) == i, (yt // 2) == i
        out.append((x[tr].to(device), y[tr].to(device), xt[te].to(device), yt[te].to(device)))
    return out


def draw(exps: list[Exp], per_exp: int, rep: int) -> list[Exp]:
    """Repetition ``rep``'s training samples: ``per_exp`` of each experience, the next ones each time
    (wrapping around), so that both loops of a repetition train on the same samples."""
    out = []
    for x, y, xt, yt in exps:
        idx = (rep * per_exp + torch.arange(per_exp, device=y.device)) % len(y)
        out.append((x[idx], y[idx], xt, yt))
    return out


def autocast(s: Setup) -> Any:
    dtype = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[s.precision]
    return nullcontext() if dtype is None else torch.autocast(s.device.type, dtype=dtype)


class Plain:
    """The hand-written loop; its model is built once (the same weights as clframe's: same seed, same
    construction order) and keeps training across repetitions."""

    def __init__(self, s: Setup) -> None:
        self.s = s
        torch.manual_seed(0)
        self.backbone = ResNet18(SHAPE, nf=s.nf, stem="cifar")
        self.head = nn.Linear(self.backbone.out_features, N_CLASSES)
        self.normalize = Normalize(RECIPE.mean, RECIPE.std, channels_last=s.channels_last)
        if s.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if s.compile:
            self.backbone.compile()
        for m in (self.backbone, self.head, self.normalize):
            m.to(s.device).train()
        self.params = [*self.backbone.parameters(), *self.head.parameters()]
        self.augment = ImageAugment(RECIPE.padding, RECIPE.flip)

    def __call__(self, exps: list[Exp]) -> dict[str, float]:
        s, dev, bs = self.s, self.s.device, self.s.batch
        opt = torch.optim.SGD(self.params, lr=s.lr)
        scaler = torch.amp.GradScaler(dev.type) if s.precision == "16-mixed" else None
        buffer = ReservoirBuffer(MEM, seed=0) if s.replay else None
        samples = images = 0
        sync(dev)
        start = time.perf_counter()
        for xe, ye, _, _ in exps:
            perm = torch.randperm(len(ye), device=dev)
            xs, ys = xe[perm], ye[perm]
            te = torch.zeros_like(ys)
            for i in range(0, len(ys), bs):
                x, y = xs[i: i + bs], ys[i: i + bs]
                xb, yb = x, y
                if buffer is not None and buffer.size:
                    xm, ym, _ = buffer.sample(REPLAYED)
                    xb, yb = torch.cat([x, xm]), torch.cat([y, ym])
                with autocast(s):
                    loss = F.cross_entropy(self.head(self.backbone(self.normalize(self.augment(xb)))), yb)
                opt.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    opt.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                if buffer is not None:
                    buffer.add(x, y, te[i: i + bs])
                samples += len(y)
                images += len(yb)
        sync(dev)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "samples": samples, "images": images, "fit_seconds": seconds}


class StepTimer:
    """An engine callback: the seconds from ``on_train_start`` to the end of the last step."""

    def __init__(self, device: torch.device, steps: int) -> None:
        self.device, self.last = device, steps - 1
        self.start = self.end = 0.0

    def on_train_start(self, trainer: Any, module: CLModule) -> None:
        sync(self.device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, module: CLModule, outputs: Any, batch: Any, i: int) -> None:
        if i == self.last:
            sync(self.device)
            self.end = time.perf_counter()

    def on_train_end(self, trainer: Any, module: CLModule) -> None:
        pass


class Clframe:
    """clframe's run: the model built once as ``build`` builds it; per repetition a new ``CLModule`` (and
    strategy) over a stream of that repetition's samples, trained by ``fit_loop``."""

    def __init__(self, s: Setup) -> None:
        self.s = s
        config = {"train": {"freeze_backbone": False, "channels_last": s.channels_last, "compile": s.compile},
                  "backbone": {"name": "resnet18", "nf": s.nf, "stem": "cifar"}, "head": {"name": "linear"},
                  "hypernet": None}
        scenario = Scenario(Stream([]), N_CLASSES, SHAPE, image=RECIPE)
        torch.manual_seed(0)
        self.model = build_model(config, scenario).to(s.device)

    def __call__(self, exps: list[Exp]) -> dict[str, float]:
        s, dev, k = self.s, self.s.device, self.s.eval_samples
        stream = Stream([
            Experience(i, TensorData(x, y, torch.zeros_like(y)), TensorData(xt[:k], yt[:k], torch.zeros_like(yt[:k])),
                       [2 * i, 2 * i + 1])
            for i, (x, y, xt, yt) in enumerate(exps)])
        loader = StreamIterator(stream, s.batch, 1, seed=0)
        strategies = {"replay": Replay(mem_size=MEM, batch_size_mem=REPLAYED)} if s.replay else {}
        module = CLModule(self.model, strategies, stream, loader.steps_per_experience(), optimizer="sgd", lr=s.lr,
                          eval_batch_size=1024, log_every=s.log_every,
                          augment=ImageAugment(RECIPE.padding, RECIPE.flip), precision=s.precision)
        timer = StepTimer(dev, len(loader))
        sync(dev)
        start = time.perf_counter()
        fit_loop(module, loader, "gpu" if dev.type == "cuda" else "cpu", progress=False, callbacks=[timer])
        sync(dev)
        fit_seconds = time.perf_counter() - start
        steps = sum(loader.steps_per_experience())
        # images through the model: the stream's samples, plus the replayed ones from the second step on
        images = module.samples_seen + (REPLAYED * (steps - 1) if s.replay else 0)
        return {"seconds": timer.end - timer.start, "samples": module.samples_seen, "images": images,
                "fit_seconds": fit_seconds}


def measure(runs: dict[str, Callable[[list[Exp]], dict[str, float]]], exps: list[Exp], per_exp: int,
            repeats: int, device: torch.device) -> dict[str, list[dict[str, float]]]:
    """Each run's records over ``repeats`` interleaved repetitions (after one warm-up each): in
    repetition r every run trains on the same samples, ``draw(exps, per_exp, r)``."""
    for fn in runs.values():
        fn(draw(exps, per_exp, 0))
    records: dict[str, list[dict[str, float]]] = {k: [] for k in runs}
    for r in range(1, repeats + 1):
        batch = draw(exps, per_exp, r)
        for k, fn in runs.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rec = fn(batch)
            if device.type == "cuda":
                rec["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
            records[k].append(rec)
    return records


def summarise(records: list[dict[str, float]]) -> dict[str, Any]:
    """Medians of a run's repetitions: samples/s and images/s of the timed steps, samples/s of the whole fit."""
    out: dict[str, Any] = {
        "samples_per_s": statistics.median(r["samples"] / r["seconds"] for r in records),
        "images_per_s": statistics.median(r["images"] / r["seconds"] for r in records),
        "fit_samples_per_s": statistics.median(r["samples"] / r["fit_seconds"] for r in records),
        "samples_per_repetition": records[0]["samples"], "images_per_repetition": records[0]["images"],
        "repetitions": records,
    }
    if "peak_allocated_bytes" in records[0]:
        out["peak_allocated_bytes"] = max(r["peak_allocated_bytes"] for r in records)
    return out


def versions(device: torch.device) -> dict[str, Any]:
    v: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                         "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
                         platform.processor() or platform.machine(),
                         "threads": torch.get_num_threads()}
    try:
        import triton

        v["triton"] = triton.__version__
    except ImportError:
        v["triton"] = None
    return v


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default cpu (one thread)")
    p.add_argument("--nf", type=int, default=20, help="ResNet-18 base width (20: the reduced form; 64: DER's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--steps", type=int, default=50,
                   help="steps per timed repetition, rounded up to a multiple of the 5 experiences (default 50)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repetitions; medians (default 5)")
    p.add_argument("--samples", type=int, default=500, help="random training images per class (default 500)")
    p.add_argument("--data-root", default=None, help="CIFAR-10's python-version batches instead of random images")
    p.add_argument("--strategy", default="naive", choices=["naive", "replay"])
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (both loops)")
    p.add_argument("--log-every", type=int, default=50, help="clframe's logger.log_every (default 50, the config's)")
    p.add_argument("--eval-samples", type=int, default=10, help="test images per experience in clframe's "
                   "boundary evaluation (default 10: next to nothing)")
    p.add_argument("--details", type=Path, default=None,
                   help="write every number here (default: <--json stem>.details.json beside --json)")
    add_args(p)
    a = p.parse_args(argv)
    if a.short:
        a.steps, a.repeats, a.samples = min(a.steps, 10), min(a.repeats, 2), min(a.samples, 100)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but CUDA is not available here")
    if device.type == "cpu":
        torch.set_num_threads(1)
    quiet()
    data, source, memory = load_data(a.data_root, a.samples)
    exps = experiences(data, device)
    del data
    per_exp = -(-a.steps // N_EXP) * a.batch_size  # each experience's samples per repetition
    s = Setup(device, a.nf, a.batch_size, a.lr, a.precision, a.channels_last, a.compile, a.strategy == "replay",
              a.log_every, a.eval_samples)
    records = measure({"plain": Plain(s), "clframe": Clframe(s)}, exps, per_exp, a.repeats, device)
    res = {k: summarise(v) for k, v in records.items()}
    ratio = res["clframe"]["samples_per_s"] / res["plain"]["samples_per_s"]
    fit_ratio = res["clframe"]["fit_samples_per_s"] / res["plain"]["samples_per_s"]
    steps = per_exp // a.batch_size * N_EXP
    tags = " ".join([a.precision] + (["CL"] if a.channels_last else []) + (["compiled"] if a.compile else []))
    detail = (f"data: {source}; ResNet-18 nf={a.nf} cifar stem, batch {a.batch_size}, SGD lr {a.lr}, "
              f"{a.strategy}, {a.device} {tags}, {steps} steps per repetition, "
              f"{'1 thread, ' if device.type == 'cpu' else ''}medians of {a.repeats} interleaved repetitions")
    print(detail)
    print(f"{'':<22}{'samples/s':>11}{'images/s':>11}{'whole fit':>11}   clframe/plain" +
          (f"{'peak alloc':>14}" if device.type == "cuda" else ""))
    for k in ("plain", "clframe"):
        r = res[k]
        rel = f"{ratio:>10.3f}x" if k == "clframe" else f"{'':>11}"
        print(f"{k:<22}{r['samples_per_s']:>11.1f}{r['images_per_s']:>11.1f}{r['fit_samples_per_s']:>11.1f}   {rel}"
              + (f"{mib(r.get('peak_allocated_bytes')):>14}" if device.type == "cuda" else ""))
    print(f"clframe whole fit / plain: {fit_ratio:.3f}x (adds on_fit_start's and the last boundary's evaluations)")
    print(f"dataset in memory: {mib(memory['dataset_bytes'])} (uint8 images {mib(memory['uint8_image_bytes'])}; "
          f"as float32 {mib(memory['float32_image_bytes'])}); RSS increase from loading it: "
          f"{mib(memory['rss_increase_bytes'])} (peak {mib(memory['peak_rss_increase_bytes'])})")
    replay = " replay" if a.strategy == "replay" else ""
    name = f"RN18 nf{a.nf} b{a.batch_size}{replay} {a.device} {tags}, clframe vs plain"
    report([Figure(name, ratio, TARGET, detail=detail)], a.json)
    out = {"settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
                        "steps_per_repetition": steps, "data": source},
           "versions": versions(device), "memory": memory, "plain": res["plain"], "clframe": res["clframe"],
           "ratio": ratio, "fit_ratio": fit_ratio, "target": TARGET}
    details = a.details or (a.json.with_name(a.json.stem + ".details.json") if a.json is not None else None)
    if details is not None:
        details.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
