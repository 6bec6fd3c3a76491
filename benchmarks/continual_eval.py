"""Cost of one continual evaluation: clframe's evaluator vs a bare forward vs Avalanche's periodic eval.

The work: MLP 784-256-256-10, 5 seen experiences x 1000 eval samples (5000 in all),
one evaluation per training iteration, one thread. Prints the time per evaluation of

    (a)  clframe's ``ContinualEvaluator.evaluate`` (results flushed to the host once per
         ``--evals`` evaluations, the transfer amortised in the figure),
    (a') the same with a flush (one host sync) after every evaluation,
    (b)  the floor: a bare batched forward over the same 5000 cached samples, batches of
         1000, ``inference_mode``, eval mode, nothing else,
    (c)  Avalanche ``Naive(eval_every=1, peval_mode="iteration")`` with accuracy and loss
         metrics on the same 5 x 1000 samples (eval batch 1000 unless ``--avalanche-eval-batch``):
         (time of training with periodic eval - time of the same training without) / evaluations
         performed,

medians over repetitions, and the ratios (a)/(b) (target <= 1.3) and (c)/(a) (target >= 20).
Within a repetition (a), (a') and (b) take turns every 10 evaluations, so that a change in
the machine's load hits them alike; (c) follows.

    python benchmarks/continual_eval.py [--repeats 5] [--evals 200] [--skip-avalanche] [--avalanche-eval-batch 1000]
                                        [--short] [--json PATH]

At the defaults it runs 3 x 5 x 200 forwards over 5000 samples (35-60 ms each on one core),
some 2-4 minutes; ``--evals 100`` about halves that. ``--short``: 30 evaluations, 5 repeats
(under a minute).

Uses the real MNIST test set (10k images) when it is there, random data otherwise (see
``benchmarks/throughput.py``); the timings do not depend on it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from clframe.core.module import CLModule
from clframe.data.stream import Experience, Stream, TensorData
from clframe.models.model import Model
from clframe.monitors.continual import ContinualEvaluator
from clframe.run.runner import quiet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure, add_args, report  # noqa: E402
from throughput import N_EXP, _Backbone, _Head, experiences, load_data, mlp  # noqa: E402

EVAL_PER_EXP, EVAL_BATCH = 1000, 1000
CHUNK = 10  # evaluations of one kind timed back to back before switching to the next kind
AVA_TRAIN, AVA_BATCH = 640, 64  # Avalanche's training experience: 640 samples, batch 64 -> 10 iterations


def eval_sets(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Per experience: (train x, train y, eval x, eval y), eval = the first 1000 samples of the experience."""
    k = EVAL_PER_EXP
    return [(xe[k:], ye[k:], xe[:k], ye[:k]) for xe, ye in experiences(x, y)]


def clframe_module(sets: list) -> CLModule:
    exps = [
        Experience(i, TensorData(xt, yt, torch.zeros_like(yt)), TensorData(xe, ye, torch.zeros_like(ye)),
                   sorted(set(ye.tolist())))
        for i, (xt, yt, xe, ye) in enumerate(sets)
    ]
    module = CLModule(Model(_Backbone(), _Head()), {}, Stream(exps), [1] * len(exps), log_every=10**9)
    module.current_exp = len(exps) - 1  # every experience seen
    module.train()  # as during training: the evaluator switches to eval mode and back
    return module


def evaluator(module: CLModule, flush_every: int) -> ContinualEvaluator:
    ev = ContinualEvaluator(every=1, subset=EVAL_PER_EXP, on="all", batch_size=EVAL_BATCH, flush_every=flush_every)
    ev._subsets(module)
    ev._module = module
    return ev


class ClframeEval:
    """``evaluate`` calls on a fresh evaluator; pending results flushed every ``flush_every`` and at the end."""

    def __init__(self, module: CLModule, flush_every: int) -> None:
        self.module, self.ev, self.n = module, evaluator(module, flush_every), 0

    def run(self, m: int) -> float:
        """Seconds of ``m`` evaluations."""
        start = time.perf_counter()
        for _ in range(m):
            self.ev.evaluate(self.module)
        self.n += m
        return time.perf_counter() - start

    def finish(self) -> float:
        """Seconds of the final flush (the host transfer of whatever is pending)."""
        start = time.perf_counter()
        self.ev.flush()
        elapsed = time.perf_counter() - start
        assert len(self.ev.steps) == self.n and len(self.ev.acc[0]) == N_EXP
        return elapsed


class BareForward:
    """A plain batched forward over ``x`` in eval and inference mode: the floor."""

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        self.model, self.x = model.eval(), x

    def run(self, m: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for _ in range(m):
                for i in range(0, len(self.x), EVAL_BATCH):
                    self.model(self.x[i : i + EVAL_BATCH])
        return time.perf_counter() - start

    def finish(self) -> float:
        return 0.0


def timed(make: dict[str, Callable[[], ClframeEval | BareForward]], n: int) -> dict[str, float]:
    """ms per evaluation of each, ``n`` evaluations each, interleaved in chunks of ``CHUNK`` so that
    a change in machine load hits all of them alike."""
    timers = {k: f() for k, f in make.items()}
    total = dict.fromkeys(timers, 0.0)
    for done in range(0, n, CHUNK):
        for k, t in timers.items():
            total[k] += t.run(min(CHUNK, n - done))
    return {k: 1e3 * (total[k] + t.finish()) / n for k, t in timers.items()}


def avalanche_setup(sets: list, eval_batch: int):
    """The benchmark (one training experience, the 5 x 1000 eval samples as the test stream) and a runner."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from avalanche.benchmarks import benchmark_from_datasets
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as make
        from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
        from avalanche.training import Naive
        from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin

    class EvalCounter(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.evals = 0

        def before_eval(self, strategy, **kwargs) -> None:
            self.evals += 1

    xt, yt = sets[0][0][:AVA_TRAIN], sets[0][1][:AVA_TRAIN]
    bench = benchmark_from_datasets(train=[make(xt, yt)], test=[make(xe, ye) for _, _, xe, ye in sets])

    def run(eval_every: int) -> tuple[float, int]:
        """Seconds of one ``train`` call on the training experience, and the evaluations it ran."""
        model = mlp()
        counter = EvalCounter()
        strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), train_mb_size=AVA_BATCH,
                         train_epochs=1, eval_mb_size=eval_batch, device="cpu", eval_every=eval_every,
                         peval_mode="iteration", plugins=[counter],
                         evaluator=EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                                                    loss_metrics(experience=True, stream=True), loggers=[]))
        start = time.perf_counter()
        strategy.train(bench.train_stream[0], eval_streams=[bench.test_stream])
        return time.perf_counter() - start, counter.evals

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions; medians reported")
    parser.add_argument("--evals", type=int, default=200, help="evaluations timed per repetition (default 200)")
    parser.add_argument("--skip-avalanche", action="store_true")
    parser.add_argument("--avalanche-eval-batch", type=int, default=EVAL_BATCH,
                        help=f"Avalanche's eval_mb_size (default {EVAL_BATCH} as clframe's; Avalanche's own is 1)")
    add_args(parser)
    args = parser.parse_args()
    if args.short:
        args.evals, args.repeats = 30, 5
    torch.set_num_threads(1)
    quiet()
    warnings.simplefilter("ignore")
    x, y, source = load_data()
    sets = eval_sets(x, y)
    module = clframe_module(sets)
    x_cat = torch.cat(evaluator(module, 1)._cache["x"])  # the evaluator's cached subsets, concatenated
    bare = nn.Sequential(*module.backbone.net, module.head.fc)  # the same weights, no wrappers
    n = args.evals

    make = {"a": lambda: ClframeEval(module, flush_every=max(n, 1)), "a'": lambda: ClframeEval(module, flush_every=1),
            "b": lambda: BareForward(bare, x_cat)}
    ava = None if args.skip_avalanche else avalanche_setup(sets, args.avalanche_eval_batch)
    evals_done: list[int] = []

    def avalanche_eval() -> float:
        with_eval, k = ava(1)
        without, k0 = ava(-1)
        assert k0 == 0, k0
        evals_done.append(k)
        return 1e3 * (with_eval - without) / k

    timed(make, min(n, CHUNK))  # warm-up: allocator, first-call overheads
    if ava is not None:
        avalanche_eval()
    evals_done.clear()
    results: dict[str, list[float]] = {k: [] for k in [*make, *(["c"] if ava else [])]}
    for _ in range(args.repeats):
        for k, v in timed(make, n).items():
            results[k].append(v)
        if ava is not None:
            results["c"].append(avalanche_eval())
    med = {k: statistics.median(v) for k, v in results.items()}

    detail = (f"data: {source}, {N_EXP} experiences x {EVAL_PER_EXP} eval samples, eval batch {EVAL_BATCH}, "
              f"MLP 784-256-256-10, 1 thread, {args.repeats} repeats (medians)")
    print(detail)
    labels = {"a": f"(a)  clframe evaluate, flush every {n}", "a'": "(a') clframe evaluate, flush every 1",
              "b": "(b)  bare batched forward (floor)", "c": "(c)  avalanche Naive periodic eval"}
    for k, v in med.items():
        spread = f"[{min(results[k]):.2f} .. {max(results[k]):.2f}]"
        print(f"{labels[k]:<42}{v:>9.2f} ms/eval   {spread}")
    if evals_done:
        iters = -(-AVA_TRAIN // AVA_BATCH)
        assert set(evals_done) == {iters + 2}, evals_done  # initial + one per iteration + final
        print(f"     avalanche: {AVA_TRAIN} training samples, batch {AVA_BATCH} -> {iters} iterations, "
              f"{evals_done[0]} evaluations counted per train call\n"
              f"     (initial + one per iteration + final), eval batch {args.avalanche_eval_batch}")
    ab, a1b = med["a"] / med["b"], med["a'"] / med["b"]
    print(f"(a)/(b)  = {ab:.2f}   target <= 1.3   {'OK' if ab <= 1.3 else 'MISSED'}")
    print(f"(a')/(b) = {a1b:.2f}")
    figures = [Figure("continual eval, clframe evaluator vs bare forward", ab, 1.3, higher_is_better=False,
                      detail=f"{detail}, {n} evaluations each: (a) {med['a']:.2f} ms, (b) {med['b']:.2f} ms")]
    if "c" in med:
        r = med["c"] / med["a"]
        print(f"(c)/(a)  = {r:.1f}   target >= 20    {'OK' if r >= 20 else 'MISSED'}")
        figures.append(Figure("continual eval, Avalanche periodic eval vs clframe", r, 20.0,
                              detail=f"{detail}, Avalanche eval batch {args.avalanche_eval_batch}: "
                                     f"(c) {med['c']:.2f} ms; (c)/(a) <= (c)/(b), 3-6x at equal eval batches "
                                     f"(docs/performance.md)"))
    report(figures, args.json)


if __name__ == "__main__":
    main()
