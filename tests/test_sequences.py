"""Variable-length sequences: the valid-step channel, the last-step readout and images read row by row."""

from __future__ import annotations

import pytest
import torch

from clframe.data.sequences import last_step, rows_as_steps, split_lengths, with_lengths


def test_with_lengths_round_trips_the_lengths_and_zeroes_the_padding():
    torch.manual_seed(0)
    x, lengths = torch.randn(3, 5, 2) + 1, torch.tensor([5, 1, 3])
    packed = with_lengths(x, lengths)
    assert packed.shape == (3, 5, 3)
    features, back = split_lengths(packed)
    assert back.dtype == torch.long and back.tolist() == [5, 1, 3]
    for i, n in enumerate(lengths.tolist()):
        assert torch.equal(features[i, :n], x[i, :n])
        assert (features[i, n:] == 0).all()


def test_without_lengths_every_step_is_valid():
    x = torch.randn(2, 4, 3)
    features, lengths = split_lengths(with_lengths(x))
    assert torch.equal(features, x) and lengths.tolist() == [4, 4]


def test_last_step_picks_each_sequence_at_its_length():
    h = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    out = last_step(h, torch.tensor([2, 4]))
    assert torch.equal(out, torch.stack([h[0, 1], h[1, 3]]))


def test_rows_as_steps_reads_an_image_row_by_row():
    x = torch.randn(4, 1, 8, 8)
    seq = rows_as_steps(x, 8)
    assert seq.shape == (4, 8, 9)
    assert torch.equal(seq[..., :8], x[:, 0])  # row r is step r
    assert (seq[..., 8] == 1).all()


def test_rows_as_steps_rejects_a_step_count_that_does_not_divide_the_sample():
    with pytest.raises(ValueError, match="do not split into 7 equal steps"):
        rows_as_steps(torch.randn(2, 1, 8, 8), 7)
