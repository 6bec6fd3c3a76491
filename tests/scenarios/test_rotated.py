"""Rotated scenario: one rotation angle per experience, all classes in each."""

from __future__ import annotations

import pytest
import torch
from clframe.scenarios.rotated import rotate, rotated

from clframe.data.datasets import load_dataset
from clframe.errors import ConfigError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_rotate_by_zero_is_the_identity():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(rotate(x, 0), x, atol=1e-6)


def test_rotate_90_is_counter_clockwise():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 0, 7] = 1.0  # top-right corner
    r = rotate(x, 90)
    assert r[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-5)  # now top-left
    assert r.sum() == pytest.approx(1.0, abs=1e-5)
    y = torch.rand(3, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(rotate(y, 90), torch.rot90(y, 1, dims=(2, 3)), atol=1e-5)


def test_rotate_180_twice_is_the_original():
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(rotate(x, 180), torch.rot90(x, 2, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(rotate(rotate(x, 180), 180), x, atol=1e-5)


def test_rotate_45_keeps_the_centre_and_loses_the_corners():
    x = torch.ones(1, 1, 9, 9)
    r = rotate(x, 45)
    assert r[0, 0, 4, 4] == pytest.approx(1.0)
    assert r[0, 0, 0, 0] == pytest.approx(0.0)  # zero fill


def test_scenario_angles_and_labels(digits):
    s = rotated(angles=[0, 90])
    assert len(s.stream) == 2
    assert s.n_classes == 10 and s.input_shape == (1, 8, 8) and s.n_tasks == 1
    assert [e.info["angle"] for e in s.stream] == [0, 90]
    assert torch.allclose(s.stream[0].train.x, digits.x_train, atol=1e-6)
    assert torch.allclose(s.stream[0].eval.x, digits.x_test, atol=1e-6)
    assert torch.allclose(s.stream[1].train.x, torch.rot90(digits.x_train, 1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(s.stream[1].eval.x, torch.rot90(digits.x_test, 1, dims=(2, 3)), atol=1e-5)
    for e in s.stream:
        assert e.classes_in_this_experience == list(range(10))
        assert torch.equal(e.train.y, digits.y_train) and torch.equal(e.eval.y, digits.y_test)


def test_default_angles_are_evenly_spaced_below_180():
    s = rotated(n_experiences=3)
    assert [e.info["angle"] for e in s.stream] == [0.0, 60.0, 120.0]
    assert "60.0" in s.name


def test_non_image_dataset_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        rotated(dataset="mnist1d")
    assert "needs images [N, C, H, W]" in str(e.value)
    assert "'mnist1d'" in str(e.value) and "[4000, 40]" in str(e.value)


def test_cumulative_trains_each_rotation_on_everything_seen_so_far():
    from clframe.scenarios.rotated import rotated

    plain = rotated(angles=[0.0, 80.0, 160.0])
    joint = rotated(angles=[0.0, 80.0, 160.0], cumulative=True)
    for k, e in enumerate(joint.stream):
        expected = torch.cat([plain.stream[i].train.x for i in range(k + 1)])
        assert torch.equal(e.train.x, expected)
        assert torch.equal(e.eval.x, plain.stream[k].eval.x)  # evaluation stays per rotation
    assert "cumulative" in joint.name


def test_no_experiences_is_a_config_error():
    with pytest.raises(ConfigError, match=r"scenario.angles is empty: .* or set scenario.angles=null"):
        rotated(angles=[])
    with pytest.raises(ConfigError, match=r"scenario.n_experiences must be >= 1, got 0"):
        rotated(n_experiences=0)
