"""Tests of aesr_sci.selfsr: thick-axis geometry, slice-profile estimation, in-plane pairs, orientations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from aesr_sci.data.degrade import Degradation
from aesr_sci.errors import DataError
from aesr_sci.selfsr import (
    InPlanePairs,
    SliceGeometry,
    SliceProfile,
    combine_orientations,
    estimate_profile,
    output_meta,
    slice_geometry,
)
from aesr_sci.spatial import Image, SpatialMeta
from tests.conftest import oblique_affine


def _meta(spacing, **kw) -> SpatialMeta:
    return SpatialMeta(oblique_affine(spacing, **kw))


# ------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize(
    ("spacing", "axis", "scale"),
    [
        ((0.9, 0.9, 5.5), 2, 6),
        ((0.86, 0.86, 2.4), 2, 3),
        ((3.3, 1.125, 1.125), 0, 3),
        ((1.0, 4.0, 1.0), 1, 4),
    ],
)
def test_scale_and_thick_axis_come_from_the_voxel_sizes(spacing, axis, scale):
    g = slice_geometry(_meta(spacing))
    assert (g.axis, g.scale) == (axis, scale)
    assert g.zoom == tuple(scale if a == axis else 1 for a in range(3))
    assert g.thickness == pytest.approx(spacing[axis])
    assert g.fwhm == pytest.approx(spacing[axis] / min(spacing))
    assert g.gap == pytest.approx(0.0)
    assert slice_geometry(_meta(spacing), scale=2).scale == 2  # the override


def test_a_given_thickness_makes_a_gap():
    g = slice_geometry(_meta((1.0, 1.0, 4.0)), thickness=3.0)
    assert g.gap == pytest.approx(0.25)
    assert g.fwhm == pytest.approx(3.0)
    with pytest.raises(DataError, match="thickness must be a positive"):
        slice_geometry(_meta((1.0, 1.0, 4.0)), thickness=-1.0)


def test_isotropic_input_needs_a_scale_and_is_then_zoomed_on_every_axis():
    with pytest.raises(DataError, match=r"a.nii.gz has no thick axis .*give --scale S"):
        slice_geometry(_meta((1.0, 1.0, 1.2)), name="a.nii.gz")
    g = slice_geometry(_meta((1.0, 1.0, 1.0)), scale=2)
    assert g.axis is None and g.zoom == (2, 2, 2)
    raster = slice_geometry(SpatialMeta(np.diag([20.0, 20.0, 1.0])), scale=2)  # a 2D raster: zero-shot only
    assert raster.axis is None and raster.zoom == (2, 2)
    with pytest.raises(DataError, match="two coarse axes"):
        slice_geometry(_meta((1.0, 3.0, 5.0)))
    with pytest.raises(DataError, match="whole numbers"):
        slice_geometry(_meta((1.0, 1.0, 1.0)), scale=0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_output_grid_keeps_the_field_of_view_and_thick_centres_are_means_of_thin_ones(axis):
    spacing = [0.9, 0.9, 0.9]
    spacing[axis] = 3.6
    shape = [5, 6, 7]
    meta = _meta(spacing)
    g = slice_geometry(meta)
    out = output_meta(meta, g)
    thick = Image(np.zeros((1, *shape), np.float32), meta)
    thin_shape = [n * z for n, z in zip(shape, g.zoom)]
    thin = Image(np.zeros((1, *thin_shape), np.float32), out)
    assert np.allclose(out.spacing, 0.9)
    # the corners of the field of view stay put
    assert np.allclose(np.sort(thick.corners(), 0), np.sort(thin.corners(), 0), atol=1e-9)
    # every thick voxel centre is the mean of the centres of the thin voxels that replace it
    for index in itertools.product(*[range(n) for n in shape]):
        thin_idx = np.array(
            list(itertools.product(*[range(i * z, (i + 1) * z) for i, z in zip(index, g.zoom)]))
        )
        assert np.allclose(thick.world(index), thin.world(thin_idx).mean(0), atol=1e-9)
    assert out.provenance["selfsr"]["scale"] == 4


# ------------------------------------------------------------------------------ orientations
def _linear_upsampler(scale: int):
    """Linear interpolation on the field-of-view grid across the first axis of (N, C, H, W) planes."""

    def upsample(planes: np.ndarray) -> np.ndarray:
        h = planes.shape[2]
        pos = np.clip((np.arange(h * scale) + 0.5) / scale - 0.5, 0, h - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, h - 1)
        w = (pos - lo)[None, None, :, None]
        return planes[:, :, lo] * (1 - w) + planes[:, :, hi] * w

    return upsample


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_combine_orientations_with_linear_interpolation_is_linear_interpolation(axis):
    rng = np.random.default_rng(0)
    volume = rng.random((2, 5, 6, 7)).astype(np.float32)
    scale = 3
    out = combine_orientations(volume, _linear_upsampler(scale), axis=axis, scale=scale, batch_size=4)
    # both orientations interpolate linearly along the thick axis: so does their mean
    thick = np.moveaxis(volume, 1 + axis, 1)  # (C, T, A, B)
    lines = _linear_upsampler(scale)(thick.reshape(1, 2, thick.shape[1], -1))[0]
    expected = np.moveaxis(lines.reshape(2, thick.shape[1] * scale, *thick.shape[2:]), 1, 1 + axis)
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_combine_orientations_averages_the_two_planes():
    volume = np.zeros((1, 4, 5, 6), np.float32)
    calls = []

    def tag(planes: np.ndarray) -> np.ndarray:
        calls.append(planes.shape)
        return np.full((planes.shape[0], 1, planes.shape[2] * 2, planes.shape[3]), float(planes.shape[3]))

    out = combine_orientations(volume, tag, axis=2, scale=2)
    # planes (T, X) stacked along Y have width 4, planes (T, Y) stacked along X width 5
    assert np.allclose(out, 4.5) and out.shape == (1, 4, 5, 12)
    assert sorted({c[2:] for c in calls}) == [(6, 4), (6, 5)]
    with pytest.raises(DataError, match="expected"):
        combine_orientations(volume, lambda p: p, axis=2, scale=2)


# ------------------------------------------------------------------------------ profile
def _isotropic_field(shape, seed: int) -> np.ndarray:
    """Piecewise-constant 'tissues' from a statistically isotropic random field with a power-law spectrum,
    with air (0) on most of its outer faces as a head has, so that the foreground rule finds the tissues."""
    rng = np.random.default_rng(seed)
    k = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    r = np.sqrt(sum(x**2 for x in k))
    r[(0,) * len(shape)] = 1.0
    f = np.fft.ifftn(np.fft.fftn(rng.standard_normal(shape)) * r**-1.5).real
    f = (f - f.mean()) / f.std()
    out = (100.0 + 20.0 * np.digitize(f, [-0.8, 0.0, 0.7])).astype(np.float32)
    out[:2] = out[-2:] = out[:, :, :8] = out[:, :, -8:] = 0.0  # most of the outer faces: air
    return out


def _thick(hr: np.ndarray, shape: str, fwhm: float, s: int, noise: float = 0.0) -> Image:
    deg = Degradation("slice", (1, 1, s), {"fwhm": fwhm, "profile": shape})
    lo = deg.apply(torch.from_numpy(hr)[None, None])[0].numpy()
    lo = lo + noise * np.random.default_rng(1).standard_normal(lo.shape).astype(np.float32)
    return Image(lo, SpatialMeta(oblique_affine((1.0, 1.0, float(s)))))


def _sd(shape: str, fwhm: float) -> float:
    """A profile's standard deviation (its effective blur), in voxels."""
    return fwhm / np.sqrt(12.0) if shape == "box" else fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@pytest.fixture(scope="module")
def field() -> np.ndarray:
    return _isotropic_field((96, 96, 192), seed=1)


@pytest.mark.parametrize(("shape", "noise"), [("gaussian", 0.0), ("box", 0.0), ("box", 2.0)])
def test_contiguous_slice_profiles_are_found_from_the_data(field, shape, noise):
    s = 4
    img = _thick(field, shape, float(s), s, noise)
    est = estimate_profile(img, slice_geometry(img.meta))
    assert est.source == "data" and est.scale == s
    assert est.shape == shape
    assert est.fwhm == pytest.approx(s, rel=0.15)


@pytest.mark.parametrize("shape", ["gaussian", "box"])
def test_slice_profiles_with_a_gap_have_their_blur_found_from_the_data(field, shape):
    s = 4
    img = _thick(field, shape, 3.0, s)  # slices 3 voxels thick, 4 apart: a 25 % gap, not told
    est = estimate_profile(img, slice_geometry(img.meta))
    assert est.source == "data"
    assert _sd(est.shape, est.fwhm) == pytest.approx(_sd(shape, 3.0), rel=0.15)
    # the estimate is not the header's (which assumes contiguous slices 4 voxels thick)
    assert _sd(est.shape, est.fwhm) < 0.9 * _sd("gaussian", 4.0)


def test_a_known_thickness_fixes_the_width_and_short_stacks_use_the_header(field):
    img = _thick(field, "box", 4.0, 4)
    est = estimate_profile(img, slice_geometry(img.meta), fwhm=4.0)
    assert (est.shape, est.fwhm, est.source) == ("box", 4.0, "data")
    short = img.replace(data=img.data[..., :6])
    est = estimate_profile(short, slice_geometry(short.meta, thickness=3.0))
    assert (est.shape, est.fwhm, est.source) == ("gaussian", pytest.approx(3.0), "header")
    assert np.isnan(SliceProfile.from_dict(est.to_dict()).residual)
    fitted = SliceProfile("box", 3.5, 4, "data", 0.05)
    assert SliceProfile.from_dict(fitted.to_dict()) == fitted
    with pytest.raises(DataError, match="thick axis"):
        estimate_profile(img, SliceGeometry(None, 2, (1.0, 1.0, 1.0), 1.0))


def test_box_profile_of_the_slice_degradation():
    # a contiguous box is the block mean; a thinner one weighs the edge voxels partially
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 16)
    box = Degradation("slice", (4,), {"profile": "box"}).apply(x)
    assert torch.allclose(box, x.reshape(1, 1, 4, 4).mean(-1))
    taps = Degradation("slice", (4,), {"fwhm": 3.0, "profile": "box"})._taps(4, channels=1)[0]
    assert np.allclose(taps, [1 / 6, 1 / 3, 1 / 3, 1 / 6])
    with pytest.raises(Exception, match="unknown slice profile 'sinc'"):
        Degradation("slice", (4,), {"profile": "sinc"})


# ------------------------------------------------------------------------------ pairs
@pytest.mark.parametrize("axis", [0, 2])
def test_in_plane_pairs_degrade_one_in_plane_axis_by_the_profile(axis):
    rng = np.random.default_rng(0)
    shape = [24, 20, 20]
    shape[axis] = 5
    spacing = [1.0, 1.0, 1.0]
    spacing[axis] = 4.0
    img = Image(rng.random((1, *shape)).astype(np.float32) + 1.0, SpatialMeta(oblique_affine(spacing)))
    g = slice_geometry(img.meta)
    profile = SliceProfile("box", 4.0, 4)
    pairs = InPlanePairs(img, g, profile, patch_size=(8, 6), normalizer="none", min_valid=0.0, augment=False)
    seen = set()
    for i in range(40):
        item = pairs[i]
        assert item["lq"].shape == (1, 2, 6) and item["gt"].shape == (1, 8, 6)
        f, *start, degraded = item["location"].tolist()
        assert f == 0 and degraded in g.in_plane and start[degraded] % 4 == 0
        seen.add(degraded)
        # the patch is in one thick slice, cut from the volume, and lq is its box-blurred decimation
        other = 3 - axis - degraded
        gt = np.moveaxis(img.data[0], (axis, degraded, other), (0, 1, 2))[
            start[axis], start[degraded] : start[degraded] + 8, start[other] : start[other] + 6
        ]
        np.testing.assert_allclose(item["gt"][0].numpy(), gt)
        np.testing.assert_allclose(item["lq"][0].numpy(), gt.reshape(2, 4, 6).mean(1), rtol=1e-5)
    assert seen == set(g.in_plane)  # both in-plane directions
    again = InPlanePairs(img, g, profile, patch_size=(8, 6), normalizer="none", min_valid=0.0, augment=False)
    assert torch.equal(again[3]["lq"], pairs[3]["lq"])  # deterministic
    with pytest.raises(DataError, match="multiple of 4"):
        InPlanePairs(img, g, profile, patch_size=(6, 6))
    with pytest.raises(DataError, match="smaller than the patch"):
        InPlanePairs(img, g, profile, patch_size=(32, 32))


def test_nodata_is_left_out_of_the_profile_fit_and_the_loss(field):
    img = _thick(field, "gaussian", 4.0, 4)
    mask = np.ones(img.spatial_shape, bool)
    mask[:20] = False
    data = np.where(mask[None], img.data, np.float32(-5000.0))  # a nodata value far below the data
    masked = Image(data, img.meta, mask)
    est = estimate_profile(masked, slice_geometry(masked.meta))
    assert est.source == "data" and est.shape == "gaussian"
    assert est.fwhm == pytest.approx(4.0, rel=0.15)
    pairs = InPlanePairs(masked, slice_geometry(masked.meta), est, patch_size=(16, 16), min_valid=0.0)
    items = [pairs[i] for i in range(30)]
    partial = [it for it in items if 0 < it["mask"].mean() < 1]
    assert partial, "no patch touched the nodata border"
    for it in partial:
        assert torch.all(it["gt"][it["mask"].expand_as(it["gt"]) == 0] == 0)


def test_the_benchmark_oracle_trains_on_the_pairs_it_is_scored_on():
    """benchmarks/selfsr.py --oracle: the thick volume's planes are its inputs, the truth's its
    targets, in both orientations, each input the box mean of its target's slices."""
    import importlib.util
    from pathlib import Path

    from aesr_sci.data.degrade import degrade

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "selfsr.py"
    spec = importlib.util.spec_from_file_location("benchmark_selfsr", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(3)
    truth = Image(
        (100 + 50 * rng.random((1, 24, 20, 32))).astype(np.float32), SpatialMeta(np.diag([1.0, 1, 1, 1]))
    )
    thick = degrade(truth, scale=[1, 1, 4], method="slice", fwhm=4.0, profile="box")
    geometry = slice_geometry(thick.meta)
    pairs = bench.truth_pairs(thick, truth, geometry, SliceProfile("box", 4.0, 4), patch=16, samples=40)
    # the planes across the thick axis (32 thin voxels), one stack along each in-plane axis
    assert [p.shape for p in pairs._hr] == [(24, 1, 32, 20), (20, 1, 32, 24)]
    orientations = set()
    for i in range(len(pairs)):
        item = pairs[i]
        lq, gt = item["lq"].numpy(), item["gt"].numpy()
        assert lq.shape == (1, 4, 16) and gt.shape == (1, 16, 16)
        np.testing.assert_allclose(lq, gt.reshape(1, 4, 4, 16).mean(2), atol=1e-5)
        orientations.add(int(item["location"][-1]))
    assert orientations == {0, 1}
