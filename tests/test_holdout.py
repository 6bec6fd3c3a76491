"""Tuning streams: the validation split held out of each experience's training data, and the first
experiences alone. The split never overlaps the training data or the test data, and with it no test
sample is anywhere in the stream."""

from __future__ import annotations

import pytest
import torch

from clframe.config import compose, validate
from clframe.data.datasets import load_dataset
from clframe.errors import ConfigError
from clframe.run.runner import build


def rows(x: torch.Tensor) -> set[bytes]:
    """Each sample as bytes (digits has no duplicate images within a split)."""
    return {r.numpy().tobytes() for r in x.flatten(1)}


def stream(*overrides: str):
    return build(compose(["experiment=split_digits", "logger.progress=false", *overrides])).scenario


def test_the_validation_split_never_overlaps_training_or_test_data():
    ds = load_dataset("digits")
    test = rows(ds.x_test)
    held = stream("scenario.validation=0.1")
    full = stream()
    for e, f in zip(held.stream, full.stream):
        train, val = rows(e.train.x), rows(e.eval.x)
        assert train.isdisjoint(val)
        assert train | val == rows(f.train.x)  # every training sample is in one of the two
        assert len(e.eval) == round(0.1 * len(f.train))
        assert (train | val).isdisjoint(test)  # no test sample anywhere in the stream
        assert e.info["scored_on"] == "validation"
    assert "test data dropped" in held.name


def test_the_split_is_the_same_in_every_run_and_seed():
    a, b = stream("scenario.validation=0.2", "seed=0"), stream("scenario.validation=0.2", "seed=3")
    assert all(torch.equal(x.eval.x, y.eval.x) for x, y in zip(a.stream, b.stream))


def test_first_experiences_keeps_the_start_of_the_stream():
    s = stream("scenario.first_experiences=2")
    assert [e.classes_in_this_experience for e in s.stream] == [[0, 1], [2, 3]]


@pytest.mark.parametrize(("override", "needle"), [("scenario.validation=1.0", "in [0, 1)"),
                                                   ("scenario.first_experiences=0", "int >= 1")])
def test_bad_values_are_refused_before_anything_is_built(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        validate(compose(["experiment=split_digits", override]))


def test_a_cumulative_stream_cannot_be_split():
    with pytest.raises(ConfigError, match="cumulative"):
        stream("scenario.validation=0.1", "scenario.cumulative=true")
