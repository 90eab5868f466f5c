"""Degradation operators: exactness, linearity and adjoints, grids, masks, noise, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aesr_sci.data.degrade import METHODS, Degradation, add_noise, default_sigma, degrade
from aesr_sci.errors import DataError, ParameterError, RecipeError
from aesr_sci.spatial import Image, SpatialMeta, voxel_to_world


def _band_limited_samples(x: np.ndarray, scale: tuple[int, ...]) -> np.ndarray:
    """The HR signal restricted to the frequencies kspace keeps (Nyquist halved), sampled at j * s."""
    axes = tuple(range(x.ndim))
    spectrum = np.fft.fftn(x, axes=axes)
    for axis, s in enumerate(scale):
        if s == 1:
            continue
        n = x.shape[axis]
        m = n // s
        k = np.abs(np.fft.fftfreq(n) * n)
        h = np.where(k < m / 2, 1.0, np.where(np.isclose(k, m / 2), 0.5, 0.0))
        shape = [1] * x.ndim
        shape[axis] = n
        spectrum = spectrum * h.reshape(shape)
    band_limited = np.fft.ifftn(spectrum, axes=axes)
    assert np.abs(band_limited.imag).max() < 1e-9  # the symmetric Nyquist split keeps it real
    return band_limited.real[tuple(slice(None, None, s) for s in scale)]


@pytest.mark.parametrize(
    ("shape", "scale"),
    [
        ((12,), (2,)),  # even LR size
        ((10,), (2,)),  # odd LR size
        ((9,), (3,)),
        ((12, 10), (2, 2)),
        ((12, 9), (4, 3)),
        ((8, 10, 12), (2, 2, 2)),
        ((6, 6, 20), (1, 1, 4)),
    ],
)
def test_kspace_equals_band_limited_original_at_lr_positions(shape, scale):
    x = np.random.default_rng(0).normal(size=shape)
    lr = Degradation("kspace", scale).apply(torch.from_numpy(x)[None, None].float())[0, 0].double().numpy()
    np.testing.assert_allclose(lr, _band_limited_samples(x, scale), atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_operator_is_linear_and_autograd_gives_its_adjoint(method):
    deg = Degradation(method, (2, 3))
    n = (8, 9)
    # explicit matrix of D, built column by column
    eye = torch.eye(math.prod(n), dtype=torch.float64).reshape(-1, 1, *n)
    matrix = deg.apply(eye).reshape(math.prod(n), -1).T  # (m, n)
    x = torch.randn(1, 1, *n, dtype=torch.float64)
    np.testing.assert_allclose(deg.apply(x).flatten().numpy(), (matrix @ x.flatten()).numpy(), atol=1e-12)
    y = torch.randn(1, 1, 4, 3, dtype=torch.float64)
    _, vjp = torch.func.vjp(deg.apply, x)
    (adjoint,) = vjp(y)
    np.testing.assert_allclose(adjoint.flatten().numpy(), (matrix.T @ y.flatten()).numpy(), atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_constant_is_preserved(method):
    x = torch.full((2, 3, 8, 8, 8), 7.0, dtype=torch.float64)
    y = Degradation(method, (2, 2, 2)).apply(x)
    assert y.shape == (2, 3, 4, 4, 4)
    np.testing.assert_allclose(y.numpy(), 7.0, atol=1e-9)


def test_bicubic_2d_matches_torch_antialias():
    x = torch.randn(2, 3, 24, 18, dtype=torch.float64)
    for scale in [(2, 2), (3, 2), (4, 3)]:
        y = Degradation("bicubic", scale).apply(x)
        ref = F.interpolate(x, size=(24 // scale[0], 18 // scale[1]), mode="bicubic", antialias=True)
        np.testing.assert_allclose(y.numpy(), ref.numpy(), atol=1e-12)


def test_area_is_block_mean():
    x = torch.randn(1, 2, 6, 9, 4, dtype=torch.float64)
    y = Degradation("area", (3, 3, 2)).apply(x)
    ref = x.reshape(1, 2, 2, 3, 3, 3, 2, 2).mean(dim=(3, 5, 7))
    np.testing.assert_allclose(y.numpy(), ref.numpy(), atol=1e-12)


@pytest.mark.parametrize("s", [2, 3, 4])
def test_slice_profile_is_centred_on_lr_voxels_with_fwhm_of_the_slice(s):
    deg = Degradation("slice", (1, 1, s))
    z = torch.arange(12 * s, dtype=torch.float64)
    ramp = z.reshape(1, 1, 1, 1, -1).expand(1, 1, 2, 2, -1).contiguous()
    lr = deg.apply(ramp)[0, 0, 0, 0].numpy()
    centres = np.arange(12) * s + (s - 1) / 2  # fov: LR voxel k sits at HR k*s + (s-1)/2
    r = deg.support_radius(3)[2]
    inner = slice(math.ceil(r / s) + 1, 12 - math.ceil(r / s) - 1)  # away from the reflecting borders
    np.testing.assert_allclose(lr[inner], centres[inner], atol=1e-9)
    # the taps follow a Gaussian whose FWHM is the slice thickness s
    w = deg._taps(s, channels=1)[0]
    u = np.arange(w.size) - (w.size - s) // 2 - (s - 1) / 2
    sigma = np.sqrt(-0.5 * (u[-1] ** 2 - u[len(u) // 2] ** 2) / np.log(w[-1] / w[len(u) // 2]))
    assert sigma * 2 * np.sqrt(2 * np.log(2)) == pytest.approx(s, rel=1e-9)
    # a gap makes the slice thinner (narrower profile, more weight in the centre)
    thin = Degradation("slice", (1, 1, s), {"gap": 0.5})._taps(s, channels=1)[0]
    assert thin.max() > w.max()


def test_gaussian_default_sigma_puts_mtf_at_0_3_and_per_band_sigmas():
    for s in (2, 3, 4):
        sigma = default_sigma(s)
        assert math.exp(-2 * math.pi**2 * sigma**2 * (1 / (2 * s)) ** 2) == pytest.approx(0.3)
    assert default_sigma(2) == pytest.approx(0.494 * 2, abs=1e-3)
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64).expand(1, 3, 32, 32)
    y = Degradation("gaussian", (2, 2), {"sigma": [0.5, 1.0, 2.0]}).apply(x)
    # stronger blur, smaller variance
    stds = [y[0, c].std().item() for c in range(3)]
    assert stds[0] > stds[1] > stds[2]
    with pytest.raises(DataError, match="3 sigmas but the data has 2 bands"):
        Degradation("gaussian", (2, 2), {"sigma": [0.5, 1.0, 2.0]}).apply(torch.zeros(1, 2, 8, 8))


def test_recipe_validation_and_round_trip():
    deg = Degradation("gaussian", [2, 2], {"sigma": (1.0, 1.5), "sigma_jitter": 0.2})
    d = json.loads(json.dumps(deg.to_dict()))
    assert Degradation.from_dict(d) == deg
    assert Degradation.from_dict({**d, "convention": "fov", "noise": {"level": 0.1}}) == deg
    assert Degradation("kspace", (2, 2, 2)).convention == "origin"
    assert {Degradation(m, 2).convention for m in METHODS if m != "kspace"} == {"fov"}
    with pytest.raises(RecipeError, match="use one of kspace, slice, gaussian, area, bicubic"):
        Degradation("lanczos", (2, 2))
    with pytest.raises(RecipeError, match="its parameters are: fwhm, gap, sigma_jitter"):
        Degradation("slice", (1, 1, 4), {"sigma": 1.0})
    with pytest.raises(ParameterError, match="whole numbers"):
        Degradation("area", (1.5, 2))
    with pytest.raises(RecipeError, match="gap must be in"):
        Degradation("slice", (1, 1, 4), {"gap": 1.0})
    with pytest.raises(RecipeError, match=r"sigma_jitter must be in \[0, 1\) \(got 1.5\)"):
        Degradation("gaussian", (2, 2), {"sigma_jitter": 1.5})
    with pytest.raises(RecipeError, match="gap must be a number >= 0"):
        Degradation("slice", (1, 1, 4), {"gap": -0.1})
    with pytest.raises(RecipeError, match="sigma must be a number > 0"):
        Degradation("gaussian", (2, 2), {"sigma": [1.0, 0.0]})
    assert Degradation("gaussian", (2, 2), {"sigma": np.array([1, 2])}).params["sigma"] == [1.0, 2.0]
    with pytest.raises(RecipeError, match="valid keys are method, scale, params"):
        Degradation.from_dict({"method": "area", "scale": [2, 2], "sigma": 1})
    with pytest.raises(RecipeError, match="uses the 'origin' grid convention"):
        Degradation.from_dict({"method": "kspace", "scale": [2, 2], "convention": "fov"})
    with pytest.raises(DataError, match="not divisible by the scale"):
        Degradation("area", (2, 2)).apply(torch.zeros(1, 1, 7, 8))


def test_jitter_draws_within_range_and_reproducibly():
    deg = Degradation("gaussian", (2, 2), {"sigma": 1.0, "sigma_jitter": 0.2})
    sigmas = [deg.randomized(i).params["sigma"] for i in range(50)]
    assert 0.8 <= min(sigmas) < max(sigmas) <= 1.2
    assert deg.randomized(3) == deg.randomized(3)
    assert "sigma_jitter" not in deg.randomized(3).params
    assert Degradation("area", (2, 2)).randomized(0) == Degradation("area", (2, 2))


def _image(shape, *, affine=None, mask=None, dtype="float32", nodata=None, seed=0):
    dims = len(shape) - 1
    aff = np.eye(dims + 1) if affine is None else affine
    data = np.random.default_rng(seed).uniform(10, 100, size=shape).astype(np.float32)
    return Image(data, SpatialMeta(aff, dtype=dtype, nodata=nodata), mask)


@pytest.mark.parametrize(
    ("method", "scale"), [("kspace", (2, 2, 2)), ("slice", (1, 1, 4)), ("gaussian", (2, 3, 2))]
)
def test_degrade_moves_the_grid_by_the_convention(method, scale):
    aff = np.array([[0.9, 0.1, 0, -10], [0, 1.1, 0.2, 5], [0.05, 0, 2.5, 3], [0, 0, 0, 1]])
    hr = _image((1, 12, 12, 16), affine=aff, dtype="int16")
    lq = degrade(hr, scale=scale, method=method)
    assert lq.spatial_shape == tuple(n // s for n, s in zip(hr.spatial_shape, scale))
    assert lq.meta.dtype == "int16" and lq.data.dtype == np.float32
    prov = lq.meta.provenance["degradation"]
    assert prov["method"] == method and prov["convention"] == Degradation(method, scale).convention
    if prov["convention"] == "fov":
        np.testing.assert_allclose(lq.corners(), hr.corners(), atol=1e-9)
    else:
        np.testing.assert_allclose(lq.world([0, 0, 0]), hr.world([0, 0, 0]), atol=1e-9)
        np.testing.assert_allclose(lq.world([1, 1, 1]), voxel_to_world(aff, scale), atol=1e-9)


def test_degrade_crops_to_a_multiple_of_the_scale_and_records_it(caplog):
    hr = _image((2, 13, 10))
    with caplog.at_level("INFO"):
        lq = degrade(hr, scale=(3, 2), method="area")
    assert lq.spatial_shape == (4, 5)
    assert lq.meta.provenance["degradation"]["crop"] == {"from_shape": [13, 10], "to_shape": [12, 10]}
    assert "cropping" in caplog.text
    np.testing.assert_allclose(lq.data[:, 0, 0], hr.data[:, :3, :2].mean(axis=(1, 2)), rtol=1e-6)
    with pytest.raises(DataError, match="smaller than the scale"):
        degrade(_image((1, 2, 8)), scale=4, method="area")


@pytest.mark.parametrize("method", ["gaussian", "slice", "area", "bicubic"])
def test_nodata_does_not_bleed_into_valid_lr_pixels(method):
    hr = _image((2, 32, 32), nodata=-9999.0)
    mask = np.ones((32, 32), bool)
    mask[:, 20:] = False
    a = hr.data.copy()
    a[:, ~mask] = -9999.0
    b = hr.data.copy()
    b[:, ~mask] = 1e6
    scale = (2, 2) if method != "slice" else (1, 4)
    lq_a = degrade(Image(a, hr.meta, mask), scale=scale, method=method)
    lq_b = degrade(Image(b, hr.meta, mask), scale=scale, method=method)
    valid = lq_a.mask
    assert valid is not None and valid.any() and not valid.all()
    assert not valid[:, 20 // scale[1] :].any()  # LR pixels whose support touches nodata are invalid
    np.testing.assert_array_equal(lq_a.data[:, valid], lq_b.data[:, valid])
    # valid LR pixels equal the degradation of the image without any nodata
    clean = degrade(Image(hr.data, hr.meta), scale=scale, method=method)
    np.testing.assert_allclose(lq_a.data[:, valid], clean.data[:, valid], rtol=1e-5)
    assert np.all(lq_a.data[:, ~valid] == -9999.0)


def test_noise_is_reproducible_and_has_the_requested_level():
    hr = _image((1, 64, 64))
    quiet = degrade(hr, scale=2, method="area")
    a = degrade(hr, scale=2, method="area", noise=0.05, seed=1)
    b = degrade(hr, scale=2, method="area", noise=0.05, seed=1)
    c = degrade(hr, scale=2, method="area", noise=0.05, seed=2)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    expected = 0.05 * np.percentile(hr.data, 99)
    assert np.std(a.data - quiet.data) == pytest.approx(expected, rel=0.1)
    assert a.meta.provenance["degradation"]["noise"] == {"level": 0.05, "kind": "gaussian", "seed": 1}


def test_rician_noise_is_positive_and_biased_on_zero_signal():
    g = torch.Generator().manual_seed(0)
    y = add_noise(torch.zeros(1, 1, 64, 64), level=0.1, kind="rician", generator=g, robust_range=1.0)
    assert (y >= 0).all()
    # the magnitude of complex Gaussian noise has mean sigma * sqrt(pi / 2)
    assert y.mean().item() == pytest.approx(0.1 * math.sqrt(math.pi / 2), rel=0.05)
    with pytest.raises(RecipeError, match="rician or gaussian"):
        add_noise(y, level=0.1, kind="poisson")


def _have_io() -> bool:
    import aesr_sci.io as aio

    return hasattr(aio, "read") and hasattr(aio, "write")


@pytest.mark.skipif(not _have_io(), reason="aesr_sci.io is not written yet")
@pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")
def test_degrade_cli_on_nifti_and_geotiff(tmp_path, make_nifti, make_geotiff):
    from click.testing import CliRunner

    from aesr_sci.cli import main
    from aesr_sci.io import read

    runner = CliRunner()
    src = make_nifti(tmp_path / "t1.nii.gz", shape=(20, 18, 16))
    out = tmp_path / "t1_x2.nii.gz"
    result = runner.invoke(main, ["degrade", str(src), str(out), "--scale", "2", "--method", "kspace"])
    assert result.exit_code == 0, result.output
    lq, hr = read(out), read(src)
    assert lq.spatial_shape == (10, 9, 8)
    np.testing.assert_allclose(lq.world([0, 0, 0]), hr.world([0, 0, 0]), atol=1e-4)

    tif = make_geotiff(tmp_path / "s2.tif", bands=3, height=40, width=36)
    out_tif = tmp_path / "s2_x4.tif"
    result = runner.invoke(main, ["degrade", str(tif), str(out_tif), "--scale", "4", "--sigma", "1.5"])
    assert result.exit_code == 0, result.output
    lq = read(out_tif)
    assert lq.spatial_shape == (10, 9) and lq.meta.dtype == "uint16"
    np.testing.assert_allclose(lq.corners(), read(tif).corners(), atol=1e-6)
    assert lq.mask is not None and not lq.mask[0].any() and lq.mask[4, 4]  # the nodata collar stays nodata

    result = runner.invoke(
        main,
        [
            "degrade",
            str(src),
            str(tmp_path / "x.nii.gz"),
            "--scale",
            "2",
            "--method",
            "kspace",
            "--sigma",
            "1",
        ],
    )
    assert result.exit_code == 2 and "does not take parameter" in result.output
