"""Replay buffers: reservoir sampling and class-balanced storage."""

from __future__ import annotations

import io

import pytest
import torch

from clframe.data.buffers import ClassBalancedBuffer, ReservoirBuffer


def stream(ids: torch.Tensor, n_classes: int = 10):
    """Samples whose x encodes the id (x[i] = id, shaped [2, 3]), y = id % n_classes, t = id // 1000."""
    x = ids.float().view(-1, 1, 1).expand(-1, 2, 3).clone()
    return x, ids % n_classes, ids // 1000


def offer(buf: ReservoirBuffer, ids: torch.Tensor, batch: int) -> None:
    for i in range(0, len(ids), batch):
        buf.add(*stream(ids[i : i + batch]))


def stored_ids(buf) -> torch.Tensor:
    x, y, t = buf.contents()
    ids = x[:, 0, 0].long()
    # x, y and t of a slot always belong to the same sample
    assert torch.equal(ids % 10, y) and torch.equal(ids // 1000, t)
    assert (x == x[:, :1, :1]).all()
    return ids


def save_load(state):
    f = io.BytesIO()
    torch.save(state, f)
    f.seek(0)
    return torch.load(f)


# -- the base buffer -----------------------------------------------------------------
@pytest.mark.parametrize("cls", [ReservoirBuffer, ClassBalancedBuffer])
def test_capacity_must_be_positive(cls):
    with pytest.raises(ValueError, match="capacity"):
        cls(0)


def test_empty_buffer_has_no_contents():
    buf = ReservoirBuffer(5)
    assert buf.size == 0
    with pytest.raises(ValueError, match="empty"):
        buf.contents()


# -- reservoir ------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_reservoir_size_is_min_of_seen_and_capacity(batch):
    buf = ReservoirBuffer(50, seed=1)
    ids = torch.arange(400)
    for i in range(0, len(ids), batch):
        buf.add(*stream(ids[i : i + batch]))
        seen = min(i + batch, len(ids))
        assert buf.seen == seen
        assert buf.size == min(seen, 50)
        assert len(buf.contents()[0]) == buf.size <= buf.capacity
    got = stored_ids(buf)
    assert len(set(got.tolist())) == 50  # distinct ...
    assert set(got.tolist()) <= set(ids.tolist())  # ... and offered


def test_reservoir_keeps_everything_until_full():
    buf = ReservoirBuffer(30)
    offer(buf, torch.arange(25), batch=10)
    assert stored_ids(buf).tolist() == list(range(25))


def reference_reservoir(ids: torch.Tensor, capacity: int, batch: int, seed: int) -> list[int]:
    """Textbook sequential reservoir sampling, one sample at a time, with the random numbers
    the buffer draws (one uniform per sample, drawn a batch at a time from its generator)."""
    gen = torch.Generator().manual_seed(seed)
    slots: list[int] = []
    seen = 0
    for i in range(0, len(ids), batch):
        chunk = ids[i : i + batch]
        r = torch.rand(len(chunk), generator=gen)
        for k, sample in enumerate(chunk.tolist()):
            if seen < capacity:
                slots.append(sample)
            else:
                j = int((r[k : k + 1] * (seen + 1)).long())  # float32, as the buffer computes it
                if j < capacity:
                    slots[j] = sample
            seen += 1
    return slots


@pytest.mark.parametrize("capacity,batch", [(5, 64), (3, 200), (20, 33), (50, 1)])
def test_reservoir_batched_add_equals_sequential_reservoir(capacity, batch):
    """Small capacity, large batches: many samples of one batch hit the same slot; the later must win."""
    ids = torch.arange(1000)
    buf = ReservoirBuffer(capacity, seed=3)
    offer(buf, ids, batch)
    assert stored_ids(buf).tolist() == reference_reservoir(ids, capacity, batch, seed=3)


def test_reservoir_later_sample_wins_a_contested_slot(monkeypatch):
    buf = ReservoirBuffer(1, seed=0)
    buf.add(*stream(torch.tensor([7])))
    # every uniform draw 0: all samples of the next batch go for slot 0, and the last must stay
    monkeypatch.setattr(torch, "rand", lambda n, generator=None, device=None: torch.zeros(n, device=device))
    buf.add(*stream(torch.tensor([11, 12, 13, 14])))
    assert stored_ids(buf).tolist() == [14]
    assert buf.seen == 5 and buf.size == 1


def test_reservoir_is_uniform_over_the_stream():
    N, cap, runs = 10_000, 500, 20
    ids = torch.arange(N)
    counts = torch.zeros(10)
    means = []
    for seed in range(runs):
        buf = ReservoirBuffer(cap, seed=seed)
        offer(buf, ids, batch=250)
        got = stored_ids(buf)
        means.append(got.float().mean().item())
        counts += torch.bincount(got // (N // 10), minlength=10)
    # each stored id is uniform on [0, N): the mean of 500 has sd ~ 129, of 20 runs ~ 29
    assert sum(means) / runs == pytest.approx((N - 1) / 2, abs=150)
    assert all(abs(m - (N - 1) / 2) < 700 for m in means)
    # every tenth of the stream gets ~1/10 of the slots (expected 1000 per decile, sd ~ 30)
    expected = cap * runs / 10
    assert ((counts - expected).abs() < 150).all(), counts
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 30  # 9 dof; p ~ 4e-4


def test_reservoir_inclusion_probability_of_first_and_last_samples():
    N, cap, runs = 400, 40, 300
    first = last = 0
    for seed in range(runs):
        buf = ReservoirBuffer(cap, seed=seed)
        offer(buf, torch.arange(N), batch=100)
        got = set(stored_ids(buf).tolist())
        first += 0 in got
        last += (N - 1) in got
    # P(kept) = cap / N = 0.1 for every sample: 30 expected of 300 (sd ~ 5.2)
    assert 12 <= first <= 50 and 12 <= last <= 50


def test_reservoir_sample_returns_stored_samples_and_covers_the_buffer():
    buf = ReservoirBuffer(20, seed=0)
    offer(buf, torch.arange(100), batch=10)
    x, y, t = buf.sample(2000)
    assert x.shape == (2000, 2, 3) and y.shape == t.shape == (2000,)
    ids = x[:, 0, 0].long()
    assert torch.equal(ids % 10, y)
    assert set(ids.tolist()) == set(stored_ids(buf).tolist())  # with replacement, every slot is drawn


def test_reservoir_only_samples_filled_slots():
    buf = ReservoirBuffer(100, seed=0)
    buf.add(*stream(torch.tensor([3, 4, 5])))
    x, _, _ = buf.sample(500)
    assert set(x[:, 0, 0].long().tolist()) == {3, 4, 5}


def test_reservoir_state_dict_round_trip_reproduces_the_future():
    a = ReservoirBuffer(30, seed=4)
    offer(a, torch.arange(200), batch=16)
    b = ReservoirBuffer(30, seed=123)  # the seed is overridden by the saved generator state
    b.load_state_dict(save_load(a.state_dict()))
    assert b.seen == a.seen == 200 and b.size == a.size
    assert torch.equal(stored_ids(a), stored_ids(b))
    for i in range(3):
        more = torch.arange(1000 + 50 * i, 1050 + 50 * i)
        a.add(*stream(more))
        b.add(*stream(more))
        assert torch.equal(a.sample(64)[0], b.sample(64)[0])
    assert torch.equal(stored_ids(a), stored_ids(b))


def test_reservoir_same_seed_same_contents_different_seed_different():
    def run(seed):
        buf = ReservoirBuffer(30, seed=seed)
        offer(buf, torch.arange(500), batch=20)
        return stored_ids(buf)

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_empty_state_dict_round_trip():
    b = ReservoirBuffer(5)
    b.load_state_dict(ReservoirBuffer(5).state_dict())
    assert b.size == 0 and b.seen == 0 and b.x is None


# -- class balanced ---------------------------------------------------------------------
def class_data(classes, per_class, start_id=0):
    ids = torch.arange(start_id, start_id + per_class * len(classes))
    y = torch.tensor(classes).repeat_interleave(per_class)
    x = ids.float().view(-1, 1, 1).expand(-1, 2, 3).clone()
    return x, y, torch.zeros_like(y), ids


def cb_counts(buf) -> dict[int, int]:
    _, y, _ = buf.contents()
    return {int(c): int(n) for c, n in zip(*torch.unique(y, return_counts=True))}


def test_class_balanced_equal_per_class_and_old_classes_shrink():
    buf = ClassBalancedBuffer(100, seed=0)
    offered: dict[int, int] = {}  # id -> class
    history = []
    for e, classes in enumerate([[0, 1], [2, 3], [4, 5, 6], [7]]):
        x, y, t, ids = class_data(classes, per_class=60, start_id=1000 * e)
        offered.update(zip(ids.tolist(), y.tolist()))
        buf.update(x, y, t)
        counts = cb_counts(buf)
        history.append(counts)
        seen = [c for cs in [[0, 1], [2, 3], [4, 5, 6], [7]][: e + 1] for c in cs]
        assert sorted(counts) == seen
        assert buf.size == sum(counts.values()) == min(100, 60 * len(seen))
        assert max(counts.values()) - min(counts.values()) <= 1
        # every stored sample is an offered one, with its own label
        got_x, got_y, _ = buf.contents()
        got = got_x[:, 0, 0].long().tolist()
        assert len(set(got)) == len(got)
        assert all(offered[i] == c for i, c in zip(got, got_y.tolist()))
    assert history[0] == {0: 50, 1: 50}
    assert history[1][0] == 25 < history[0][0]
    assert history[3][0] == 12 or history[3][0] == 13


def test_class_balanced_keeps_a_subset_of_what_it_had():
    buf = ClassBalancedBuffer(40, seed=1)
    x, y, t, _ = class_data([0, 1], per_class=50)
    buf.update(x, y, t)
    before = set(buf.contents()[0][:, 0, 0].long().tolist())
    x, y, t, _ = class_data([2, 3], per_class=50, start_id=500)
    buf.update(x, y, t)
    old = {i for i, c in zip(buf.contents()[0][:, 0, 0].long().tolist(), buf.contents()[1].tolist()) if c < 2}
    assert len(old) == 20 and old <= before


def test_class_balanced_with_few_samples_keeps_them_all():
    buf = ClassBalancedBuffer(100)
    x, y, t, _ = class_data([0, 1, 2], per_class=5)
    buf.update(x, y, t)
    assert buf.size == 15 and cb_counts(buf) == {0: 5, 1: 5, 2: 5}


def test_class_balanced_sample_returns_stored_samples():
    buf = ClassBalancedBuffer(30, seed=0)
    x, y, t, _ = class_data([0, 1, 2], per_class=40)
    buf.update(x, y, t)
    sx, sy, _ = buf.sample(500)
    stored = set(buf.contents()[0][:, 0, 0].long().tolist())
    assert set(sx[:, 0, 0].long().tolist()) <= stored
    assert set(sy.tolist()) == {0, 1, 2}


def test_class_balanced_state_dict_round_trip_reproduces_the_future():
    a = ClassBalancedBuffer(30, seed=2)
    x, y, t, _ = class_data([0, 1], per_class=40)
    a.update(x, y, t)
    b = ClassBalancedBuffer(30, seed=99)
    b.load_state_dict(save_load(a.state_dict()))
    assert torch.equal(a.sample(50)[0], b.sample(50)[0])
    x, y, t, _ = class_data([2, 3, 4], per_class=40, start_id=100)
    a.update(x, y, t)
    b.update(x, y, t)
    assert torch.equal(a.contents()[0], b.contents()[0])
    assert torch.equal(a.sample(50)[1], b.sample(50)[1])
