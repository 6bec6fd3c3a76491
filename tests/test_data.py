"""StreamIterator: order, coverage, shuffling, length and resumption."""

from __future__ import annotations

import pytest
import torch

from clframe.data.iterator import StreamIterator
from clframe.data.stream import Experience, Stream, TensorData

SIZES = [10, 7, 12]  # training samples per experience


def make_stream(sizes=SIZES) -> Stream:
    """Experience e holds ids e*100 .. e*100+n-1 (x[i] = id, y = id % 10, t = e)."""
    exps = []
    for e, n in enumerate(sizes):
        ids = torch.arange(e * 100, e * 100 + n)
        d = TensorData(ids.float().view(-1, 1).repeat(1, 2), ids % 10, torch.full((n,), e))
        exps.append(Experience(index=e, train=d, eval=d, classes_in_this_experience=sorted(set((ids % 10).tolist()))))
    return Stream(exps)


def ids(batch) -> list[int]:
    return batch.x[:, 0].long().tolist()


def test_experiences_in_order_each_epoch_covers_every_sample_once():
    bs, epochs = 3, 2
    it = StreamIterator(make_stream(), batch_size=bs, epochs=epochs, seed=0)
    batches = list(it)
    assert [b.exp for b in batches] == sorted(b.exp for b in batches)
    assert it.steps_per_experience() == [4 * epochs, 3 * epochs, 4 * epochs]
    for e, n in enumerate(SIZES):
        exp_batches = [b for b in batches if b.exp == e]
        per_epoch = -(-n // bs)
        assert len(exp_batches) == per_epoch * epochs
        for ep in range(epochs):
            chunk = exp_batches[ep * per_epoch:(ep + 1) * per_epoch]
            got = [i for b in chunk for i in ids(b)]
            assert sorted(got) == list(range(e * 100, e * 100 + n))  # each sample exactly once
            assert all(len(b) == bs for b in chunk[:-1]) and 1 <= len(chunk[-1]) <= bs
        for b in exp_batches:
            assert torch.equal(b.y, b.x[:, 0].long() % 10) and (b.t == e).all()


def test_each_batch_says_where_its_samples_sit_in_the_experience():
    stream = make_stream()
    for shuffle in (True, False):
        for b in StreamIterator(stream, batch_size=4, epochs=2, seed=3, shuffle=shuffle):
            assert torch.equal(stream[b.exp].train.x[b.index], b.x)  # Batch.index: positions in exp.train


def test_len_counts_the_batches_left():
    it = StreamIterator(make_stream(), batch_size=4, epochs=3, seed=1)
    total = sum(it.steps_per_experience())
    assert len(it) == total == 3 * (3 + 2 + 3)
    for k, _ in enumerate(it, start=1):
        assert len(it) == total - k
    assert len(it) == 0
    assert list(it) == []  # exhausted


def test_shuffle_differs_across_epochs_and_experiences_but_is_reproducible():
    def order(seed, epochs=3):
        it = StreamIterator(make_stream([40]), batch_size=40, epochs=epochs, seed=seed)
        return [ids(b) for b in it]

    a = order(0)
    assert len(a) == 3
    assert a[0] != a[1] != a[2] and a[0] != a[2]
    assert a[0] != list(range(40))
    assert order(0) == a  # same seed: same shuffles
    assert order(1) != a  # another seed: other shuffles


def test_no_shuffle_keeps_data_order():
    it = StreamIterator(make_stream(), batch_size=5, epochs=2, shuffle=False)
    got = [i for b in it if b.exp == 0 for i in ids(b)]
    assert got == list(range(10)) * 2


@pytest.mark.parametrize("consumed", [0, 1, 2, 4, 5, 9, 13, 21, 22])
def test_resume_mid_stream_yields_exactly_the_remaining_batches(consumed):
    full = [(b.exp, ids(b)) for b in StreamIterator(make_stream(), batch_size=3, epochs=2, seed=7)]
    assert len(full) == 22  # (4 + 3 + 4) batches x 2 epochs

    first = StreamIterator(make_stream(), batch_size=3, epochs=2, seed=7)
    gen = iter(first)
    head = [next(gen) for _ in range(consumed)]
    assert [(b.exp, ids(b)) for b in head] == full[:consumed]
    state = first.state_dict()

    resumed = StreamIterator(make_stream(), batch_size=3, epochs=2, seed=7)
    resumed.load_state_dict(state)
    assert len(resumed) == len(full) - consumed
    rest = [(b.exp, ids(b)) for b in resumed]
    assert rest == full[consumed:]


def test_state_dict_is_a_snapshot():
    it = StreamIterator(make_stream(), batch_size=3, seed=0)
    gen = iter(it)
    next(gen)
    state = it.state_dict()
    next(gen)
    assert state == {"position": {"exp": 0, "epoch": 0, "batch": 1}}


@pytest.mark.parametrize("bs,epochs", [(0, 1), (4, 0)])
def test_invalid_batch_size_or_epochs(bs, epochs):
    with pytest.raises(ValueError):
        StreamIterator(make_stream(), batch_size=bs, epochs=epochs)
