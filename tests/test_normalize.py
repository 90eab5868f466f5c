"""Reversible intensity normalisation on numpy arrays and torch tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aesr_sci.data.normalize import Normalizer
from aesr_sci.errors import DataError, RecipeError


def _data() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.uniform(0, 10, (16, 16)), rng.uniform(100, 5000, (16, 16))]).astype(np.float32)


@pytest.mark.parametrize("to_torch", [False, True])
def test_percentile_per_channel_maps_percentiles_to_0_and_1_and_inverts(to_torch):
    x = _data()
    norm = Normalizer("percentile", p_low=1.0, p_high=99.0)
    stats = norm.fit(torch.from_numpy(x) if to_torch else x)
    json.dumps(stats)  # stored in checkpoints
    data = torch.from_numpy(x) if to_torch else x
    y = norm.apply(data, stats)
    assert isinstance(y, torch.Tensor) == to_torch
    y = np.asarray(y)
    for c in range(2):
        assert np.percentile(y[c], 1) == pytest.approx(0.0, abs=1e-5)
        assert np.percentile(y[c], 99) == pytest.approx(1.0, abs=1e-5)
    back = np.asarray(norm.invert(norm.apply(data, stats), stats))
    np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-3)


def test_mask_and_per_volume_statistics():
    x = _data()
    mask = np.zeros((16, 16), bool)
    mask[:8] = True
    x_nodata = x.copy()
    x_nodata[:, ~mask] = -9999.0
    norm = Normalizer(p_low=0.0, p_high=100.0)
    stats = norm.fit(x_nodata, mask)
    assert stats["low"][0] == pytest.approx(x[0, mask].min())
    assert stats["high"][1] == pytest.approx(x[1, mask].max())
    joint = Normalizer(p_low=0.0, p_high=100.0, per_channel=False).fit(x)
    assert len(joint["low"]) == 1 and joint["high"][0] == pytest.approx(x.max())
    y = Normalizer(per_channel=False).apply(x, joint)
    assert y[1].max() == pytest.approx(1.0) and y[0].max() < 0.01  # band ratios are kept
    with pytest.raises(DataError, match="selects no valid pixel"):
        norm.fit(x, np.zeros((16, 16), bool))


def test_batched_tensor_with_channel_axis_1():
    x = torch.from_numpy(_data())
    norm = Normalizer()
    stats = norm.fit(x)
    batch = x[None].repeat(3, 1, 1, 1)
    y = norm.apply(batch, stats, channel_axis=1)
    torch.testing.assert_close(y[2], norm.apply(x, stats))
    torch.testing.assert_close(norm.invert(y, stats, channel_axis=1), batch, rtol=1e-5, atol=1e-3)


def test_fixed_and_none():
    x = np.array([[[0, 10000]]], dtype=np.uint16)
    fixed = Normalizer("fixed", scale=1e-4)
    stats = fixed.fit(x)
    y = fixed.apply(x, stats)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[[0.0, 1.0]]])
    np.testing.assert_allclose(fixed.invert(y, stats), x)
    none = Normalizer("none")
    assert none.apply(x, none.fit(x)) is x


def test_serialisation_and_validation():
    norm = Normalizer("percentile", p_low=2.0, p_high=98.0, per_channel=False)
    assert Normalizer.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm
    assert Normalizer.from_dict("none").method == "none"
    assert Normalizer.from_dict(None) == Normalizer()
    with pytest.raises(RecipeError, match="valid keys are method, p_low"):
        Normalizer.from_dict({"method": "percentile", "pmax": 99})
    with pytest.raises(RecipeError, match="use one of percentile, fixed, none"):
        Normalizer("zscore")
    with pytest.raises(RecipeError, match="p_low < p_high"):
        Normalizer(p_low=50, p_high=10)
    with pytest.raises(DataError, match="made by method 'fixed'"):
        Normalizer().apply(np.zeros((1, 2, 2)), {"method": "fixed", "scale": 1.0, "offset": 0.0})
    with pytest.raises(DataError, match="2 channels but the data has 3"):
        Normalizer().apply(np.zeros((3, 2, 2)), {"method": "percentile", "low": [0, 0], "high": [1, 1]})


def _head_in_air(seed: int = 0) -> np.ndarray:
    """A bright block (the head) on a zero background (the air), 2 channels."""
    rng = np.random.default_rng(seed)
    x = np.zeros((2, 24, 24, 24), np.float32)
    x[:, 6:18, 6:18, 6:18] = rng.uniform(200, 400, (2, 12, 12, 12))
    return x


def test_fit_statistics_foreground_policy_ignores_the_air():
    from aesr_sci.data.normalize import fit_statistics, foreground_level

    x = _head_in_air()
    norm = Normalizer("percentile", p_low=1.0, p_high=99.0)
    fg = fit_statistics(x, normalizer=norm, policy="foreground")
    everything = fit_statistics(x, normalizer=norm, policy="valid")
    assert everything["low"] == [0.0, 0.0]  # 87 % of the voxels are air
    head = x[:, 6:18, 6:18, 6:18].reshape(2, -1)
    np.testing.assert_allclose(fg["low"], np.percentile(head, 1.0, axis=1), rtol=1e-5)
    np.testing.assert_allclose(fg["high"], everything["high"], rtol=0.05)
    level = foreground_level(x)  # background (the faces are air) and 5 % of the robust range
    np.testing.assert_allclose(level[:, 0], 0.0)
    np.testing.assert_allclose(level[:, 1], [0.05 * np.percentile(c, 99.5) for c in x], rtol=1e-5)
    # a k-space-degraded input rings below the air: the background still comes from the faces
    ringing = x.copy()
    ringing[:, 5, 6:18, 6:18] = -40.0
    ringing[:, 0, 0, 0] = -500.0
    fg = fit_statistics(ringing, normalizer=norm, policy="foreground")
    assert fg["low"][0] < -39 and np.mean(np.abs(ringing[0]) > foreground_level(ringing)[0, 1]) < 0.2
    # nodata is excluded under both policies
    valid = np.ones(x.shape[1:], bool)
    valid[:, :, :12] = False
    x_nodata = x.copy()
    x_nodata[:, ~valid] = -1e6
    assert fit_statistics(x_nodata, valid, normalizer=norm, policy="valid")["low"] == [0.0, 0.0]
    assert fit_statistics(x_nodata, valid, normalizer=norm, policy="foreground")["low"][0] > 200


def test_fit_statistics_falls_back_accepts_a_decimated_sample_and_refuses_bad_input():
    from aesr_sci.data.normalize import fit_statistics, statistics_policy

    norm = Normalizer("percentile", p_low=0.0, p_high=100.0)
    flat = np.full((1, 8, 8), 5.0, np.float32)  # nothing above the foreground level: every valid value
    assert fit_statistics(flat, normalizer=norm, policy="foreground") == {
        "method": "percentile",
        "low": [5.0],
        "high": [5.0],
    }
    x = _head_in_air()
    full = fit_statistics(x, normalizer=Normalizer(), policy="foreground")
    decimated = fit_statistics(x[:, ::2, ::2, ::2], normalizer=Normalizer(), policy="foreground")
    np.testing.assert_allclose(decimated["low"], full["low"], rtol=0.05)
    np.testing.assert_allclose(decimated["high"], full["high"], rtol=0.05)
    assert fit_statistics(torch.from_numpy(x), normalizer=Normalizer(), policy="foreground") == full
    fixed = Normalizer("fixed", scale=1e-4)
    assert fit_statistics(x, normalizer=fixed, policy="foreground") == fixed.fit(x)
    with pytest.raises(DataError, match="unknown statistics policy 'air'"):
        fit_statistics(x, normalizer=norm, policy="air")
    with pytest.raises(DataError, match="every pixel is nodata"):
        fit_statistics(x, np.zeros(x.shape[1:], bool), normalizer=norm, policy="valid")
    assert statistics_policy("nifti") == "foreground" and statistics_policy(["geotiff"]) == "valid"
    assert statistics_policy(["nifti", "geotiff"]) == "valid"


def test_statistics_policy_of_an_image_made_in_memory() -> None:
    from aesr_sci.data.normalize import statistics_policy

    assert statistics_policy(None) == "valid"
    assert statistics_policy("nifti") == "foreground"
    assert statistics_policy(["nifti", "geotiff"]) == "valid"
