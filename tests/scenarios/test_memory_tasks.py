"""Parity and DMS sequences: labels, lengths, bit statistics, and the scenario built from them."""

from __future__ import annotations

import pytest
import torch
from clframe.scenarios._memory_tasks import dms_labels, parity_labels, sample_sequences

from clframe.config.registry import SCENARIOS
from clframe.core.objectives import IGNORE
from clframe.data.sequences import split_lengths
from clframe.errors import ConfigError


def sequences(task: str, n: int = 400, n_max: int = 5, steps: int = 21, seed: int = 0):
    return sample_sequences(task, n, n_max, steps, torch.Generator().manual_seed(seed), torch.device("cpu"))


@pytest.mark.parametrize("n", [1, 2, 4, 5])
def test_parity_and_dms_labels_match_a_direct_count(n):
    bits, lengths = sequences("parity")
    for i in range(len(bits)):
        seq = bits[i, : lengths[i]].long().tolist()
        assert parity_labels(bits[i: i + 1], lengths[i: i + 1], n).item() == sum(seq[-n:]) % 2
        assert dms_labels(bits[i: i + 1], lengths[i: i + 1], n).item() == int(seq[-n] == seq[-1])


def test_lengths_bits_and_padding():
    bits, lengths = sequences("parity", n=2000)
    assert lengths.min() >= 7 and lengths.max() <= 21  # [n_max + 2, 4 n_max + 2)
    assert set(lengths.unique().tolist()) == set(range(7, 22))
    pad = torch.arange(21) >= lengths.unsqueeze(1)
    assert bits[pad].sum() == 0
    # parity draws p ~ U(0, 1) per sequence: the fraction of ones varies widely between sequences
    frac = (bits.sum(1) / lengths).std()
    dms_bits, dms_len = sequences("dms", n=2000)
    assert frac > 0.2 and (dms_bits.sum(1) / dms_len).std() < 0.2
    assert abs(dms_bits.sum() / dms_len.sum() - 0.5) < 0.02


def test_the_scenario_has_a_level_per_n_and_task_labels_for_multi_head():
    s = SCENARIOS.build("parity", {"n_min": 2, "n_max": 4, "curriculum": "multi", "eval_samples": 50,
                                   "train_samples": 20})
    assert [e.info["N"] for e in s.stream] == [2, 3, 4] and s.n_tasks == 3 and s.input_shape == (17, 2)
    e = s.stream[1]
    assert e.task_label == 1 and (e.eval.t == 1).all() and len(e.eval) == 50 and len(e.train) == 20
    x, lengths = split_lengths(e.eval.x)
    assert torch.equal(e.eval.y, parity_labels(x[..., 0], lengths, 3))
    single = SCENARIOS.build("parity", {"n_min": 2, "n_max": 4})
    assert single.n_tasks == 1 and all((ex.eval.t == 0).all() for ex in single.stream)


def test_lengths_level_follows_each_levels_n():
    s = SCENARIOS.build("dms", {"n_min": 2, "n_max": 6, "lengths": "level", "eval_samples": 500})
    _, first = split_lengths(s.stream[0].eval.x)
    _, last = split_lengths(s.stream[-1].eval.x)
    assert first.max() <= 9 and last.min() >= 8 and s.input_shape == (25, 2)


@pytest.mark.parametrize("params, key", [
    ({"curriculum": "cumulative"}, "curriculum"), ({"n_min": 5, "n_max": 3}, "n_max"),
    ({"threshold": 1.5}, "threshold"), ({"window": 0}, "window"), ({"lengths": "long"}, "lengths"),
])
def test_bad_settings_name_the_key(params, key):
    with pytest.raises(ConfigError, match=f"'(scenario.)?{key}'"):
        SCENARIOS.build("parity", params)


def test_a_multi_head_batch_scores_each_sequence_with_every_trained_head():
    s = SCENARIOS.build("parity", {"n_min": 2, "n_max": 5, "curriculum": "multi"})
    b = s.curriculum.sample(2, 8, torch.Generator().manual_seed(0), torch.device("cpu"))
    # one column per level; the untrained head (N = 5) is not scored
    assert b.x.shape == (8, 21, 2) and b.y.shape == (8, 4) and b.t.tolist() == [[0, 1, 2, 0]] * 8
    assert (b.y[:, 3] == IGNORE).all()
    x, lengths = split_lengths(b.x)
    for k, n in enumerate((2, 3, 4)):
        assert torch.equal(b.y[:, k], parity_labels(x[..., 0], lengths, n))
    assert torch.allclose(b.weight, torch.full((8,), 3 / 8))
    sliding = SCENARIOS.build("parity", {"n_min": 2, "n_max": 5, "curriculum": "sliding", "window": 2})
    b = sliding.curriculum.sample(2, 8, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert (b.y[:, [0, 3]] == IGNORE).all() and (b.y[:, [1, 2]] != IGNORE).all()


def test_the_multi_head_loss_is_the_sum_of_the_trained_heads_mean_losses():
    from clframe.core.objectives import task_loss
    from clframe.models.heads.linear import MultiHead

    s = SCENARIOS.build("parity", {"n_min": 2, "n_max": 5, "curriculum": "multi"})
    b = s.curriculum.sample(2, 16, torch.Generator().manual_seed(0), torch.device("cpu"))
    head, h = MultiHead(6, 2, 4), torch.randn(16, 6)
    expected = sum(torch.nn.functional.cross_entropy(head(h, b.t[:, k]), b.y[:, k]) for k in range(3))
    assert torch.allclose(task_loss(head(h, b.t), b.y, b.weight), expected)
