"""Replay: mixing stored samples into the batch, loss weights, when the buffer fills, and that it helps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from clframe.strategies.replay import Replay

from clframe.config import compose
from clframe.core.module import CLModule
from clframe.core.objectives import task_loss
from clframe.core.strategy import StepContext, Strategy
from clframe.data.batch import Batch
from clframe.data.buffers import ClassBalancedBuffer, ReservoirBuffer
from clframe.errors import ConfigError
from clframe.run.runner import Built, build, fit


def batch_of(ids: list[int], exp: int = 0) -> Batch:
    ids_t = torch.tensor(ids)
    return Batch(ids_t.float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone(), ids_t % 10, ids_t // 100, exp)


def ids_of(x: torch.Tensor) -> list[int]:
    return x[:, 0, 0, 0].long().tolist()


def filled(mode: str = "mixed", mem_weight: float = 0.5, batch_size_mem: int = 8) -> Replay:
    r = Replay(mem_size=20, batch_size_mem=batch_size_mem, mode=mode, mem_weight=mem_weight, seed=0)
    b = batch_of(list(range(100, 130)))
    r.buffer.add(b.x, b.y, b.t)
    return r


# -- the batch -----------------------------------------------------------------------
def test_default_buffer_kinds():
    assert isinstance(Replay().buffer, ReservoirBuffer)
    assert isinstance(Replay(buffer="class_balanced").buffer, ClassBalancedBuffer)
    assert Replay(mem_size=7).buffer.capacity == 7



@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mem_size": 0}, r"^'mem_size' must be >= 1, got 0: the replay buffer needs room for at least one sample\."),
    ({"buffer": "class_balanced", "mem_size": -1}, r"^'mem_size' must be >= 1, got -1"),
])
def test_settings_that_cannot_work_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Replay(**kwargs)


def test_ranges_in_the_signature_are_checked_when_built_from_a_config():
    from clframe.config.registry import STRATEGIES

    with pytest.raises(ConfigError, match=r"^'strategies\.replay\.batch_size_mem' must be >= 0, got -1\.$"):
        STRATEGIES.build("replay", {"batch_size_mem": -1})
    with pytest.raises(ConfigError, match=r"^'strategies\.replay\.mem_weight' must be <= 1, got 1\.5\.$"):
        STRATEGIES.build("replay", {"mode": "separate", "mem_weight": 1.5})

def test_empty_buffer_leaves_the_batch_alone():
    r = Replay()
    b = batch_of([1, 2, 3])
    assert r.before_forward(b, None) is b


def test_before_forward_appends_replayed_samples():
    r = filled(batch_size_mem=8)
    b = batch_of([1, 2, 3, 4, 5], exp=3)
    out = r.before_forward(b, None)
    assert len(out) == 13 and out.n_new == 5 and out.exp == 3
    assert out.weight is None  # mixed: one mean loss over all 13
    assert ids_of(out.x[:5]) == [1, 2, 3, 4, 5]
    stored = set(ids_of(r.buffer.contents()[0]))
    assert set(ids_of(out.x[5:])) <= stored
    # labels and task labels travel with their samples
    assert out.y.tolist() == [i % 10 for i in ids_of(out.x)]
    assert out.t.tolist() == [i // 100 for i in ids_of(out.x)]

    new = out.new_samples()
    assert ids_of(new.x) == [1, 2, 3, 4, 5]
    assert torch.equal(new.y, b.y) and torch.equal(new.t, b.t)
    assert new.n_new is None and new.weight is None and len(new) == 5


def test_batch_size_mem_zero_disables_replay():
    r = filled(batch_size_mem=0)
    b = batch_of([1, 2])
    assert r.before_forward(b, None) is b


@pytest.mark.parametrize("w", [0.5, 0.7, 0.1])
def test_separate_mode_weights(w):
    r = filled(mode="separate", mem_weight=w, batch_size_mem=6)
    out = r.before_forward(batch_of([1, 2, 3, 4]), None)
    weight = out.weight
    assert weight.shape == (10,) and weight.dtype == torch.float32
    assert weight.sum().item() == pytest.approx(1.0)
    assert weight[:4].sum().item() == pytest.approx(1 - w)
    assert weight[4:].sum().item() == pytest.approx(w)
    assert torch.allclose(weight[:4], torch.full((4,), (1 - w) / 4))
    # the task loss becomes (1 - w) * CE_new + w * CE_mem
    torch.manual_seed(0)
    logits = torch.randn(10, 10)
    expected = (1 - w) * F.cross_entropy(logits[:4], out.y[:4]) + w * F.cross_entropy(logits[4:], out.y[4:])
    assert task_loss(logits, out.y, out.weight).item() == pytest.approx(expected.item(), rel=1e-5)


def test_after_step_offers_only_stream_samples_to_the_reservoir():
    r = filled(batch_size_mem=8)
    seen = r.buffer.seen
    out = r.before_forward(batch_of([1, 2, 3]), None)
    ctx = StepContext(None, out, None, None, 0, 0)
    r.after_optimizer_step(ctx)
    assert r.buffer.seen == seen + 3


def test_state_dict_round_trip():
    a = filled()
    b = Replay(mem_size=20, batch_size_mem=8, seed=5)
    b.load_state_dict(a.state_dict())
    x = batch_of([1, 2])
    assert torch.equal(a.before_forward(x, None).x, b.before_forward(x, None).x)


# -- in a run ------------------------------------------------------------------------
class Probe(Strategy):
    """Sees the batch after replay (placed after it) and the buffer at experience boundaries."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        self.batch_sizes: list[tuple[int, int, int | None]] = []
        self.size_at_start: list[int] = []
        self.buffer_sizes: list[int] = []

    def on_experience_start(self, exp, module):
        self.size_at_start.append(self.replay.buffer.size)

    def before_forward(self, batch, module):
        self.batch_sizes.append((batch.exp, len(batch), batch.n_new))
        return batch

    def after_optimizer_step(self, ctx):
        self.buffer_sizes.append(self.replay.buffer.size)


def with_replay(overrides, replay: Replay) -> tuple[Built, Probe]:
    built = build(compose(overrides))
    m = built.module
    probe = Probe(replay)
    module = CLModule(m.model, {"replay": replay, "probe": probe}, built.scenario.stream,
                      built.loader.steps_per_experience())
    return Built(built.config, built.scenario, module, built.loader), probe


def test_reservoir_fills_during_training(tiny):
    replay = Replay(mem_size=100, batch_size_mem=10)
    built, probe = with_replay(tiny, replay)
    fit(built)
    stream = built.scenario.stream
    n_train = [len(e.train) for e in stream]
    assert replay.buffer.seen == built.module.samples_seen == sum(n_train)
    assert probe.size_at_start == [0, 100]
    # every step adds its 32 new samples, from the very first experience
    assert probe.buffer_sizes[:3] == [32, 64, 96] and probe.buffer_sizes[3] == 100
    first, rest = probe.batch_sizes[0], probe.batch_sizes[1:]
    assert first == (0, 32, None)  # nothing to replay yet
    full = [b for b in rest if b[1] == 32 + 10]
    assert len(full) >= len(rest) - 2  # the last batch of an experience may be short
    assert all(n_new == size - 10 for _, size, n_new in rest)
    # the buffer holds real training samples of both experiences
    x, y, _ = replay.buffer.contents()
    train_x = torch.cat([e.train.x for e in stream]).flatten(1)
    assert (torch.cdist(x.flatten(1), train_x).min(1).values == 0).all()
    assert set(y.tolist()) & set(stream[0].classes_in_this_experience)
    assert set(y.tolist()) & set(stream[1].classes_in_this_experience)


def test_class_balanced_fills_at_experience_end(tiny):
    replay = Replay(mem_size=50, buffer="class_balanced", batch_size_mem=10)
    built, probe = with_replay(tiny, replay)
    fit(built)
    assert probe.size_at_start == [0, 50]
    # no replay during the first experience, replay during the second
    exp0 = [(size, n_new) for exp, size, n_new in probe.batch_sizes if exp == 0]
    exp1 = [(size, n_new) for exp, size, n_new in probe.batch_sizes if exp == 1]
    assert all(n_new is None and size <= 32 for size, n_new in exp0)
    assert all(n_new is not None and size == n_new + 10 for size, n_new in exp1)
    assert all(s == 0 for s in probe.buffer_sizes[: built.loader.steps_per_experience()[0]])
    _, y, _ = replay.buffer.contents()
    counts = torch.bincount(y, minlength=10)
    assert counts.tolist() == [5] * 10  # rebuilt after the last experience: 50 slots over 10 classes


def test_separate_mode_trains(tiny):
    built = build(compose(tiny + ["strategy=replay", "strategies.replay.mode=separate",
                                  "strategies.replay.mem_weight=0.7"]))
    fit(built)
    assert len(built.module.acc_matrix) == 2
    assert built.module.strategies["replay"].buffer.size == 200


SPLIT5 = ["scenario.n_experiences=5", "backbone.hidden=[64]", "train.epochs=3", "train.lr=0.1", "logger.progress=false"]


def test_replay_forgets_less_than_naive():
    from clframe.evaluation.metrics import summary_metrics

    results = {}
    for strategy in ("naive", "replay"):
        built = build(compose(SPLIT5 + [f"strategy={strategy}"]))
        fit(built)
        results[strategy] = summary_metrics(built.module.acc_matrix)
    # class-incremental split digits: naive only knows the last two classes (~0.2)
    assert results["naive"]["final_avg_acc"] < 0.3
    assert results["replay"]["final_avg_acc"] > results["naive"]["final_avg_acc"] + 0.25
    assert results["replay"]["avg_forgetting"] < results["naive"]["avg_forgetting"]
