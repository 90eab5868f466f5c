"""Guided super-resolution groundwork: guided networks, guide-grid checks, Sentinel-2 product bands,
classical pansharpening baselines, their metrics and the recipes' guide lists."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from affine import Affine
from torch import nn

from aesr_sci.errors import DataError, MismatchError, ModelError
from aesr_sci.guide import (
    ProductBand,
    check_guide,
    check_guide_bands,
    sentinel2_band,
    sentinel2_bands,
    sentinel2_plan,
    wald_degrade,
    wald_triple,
)
from aesr_sci.io import read_meta
from aesr_sci.nets import build_model, describe_models, model_config, model_from_config
from aesr_sci.nets.blocks import interpolate
from aesr_sci.nets.registry import is_guided
from aesr_sci.spatial import Image, SpatialMeta, zoom_affine
from tests.test_nets import _one_thread, _seed  # noqa: F401 (autouse: one thread, seeded weights)

GUIDED = ["guided_dual", "guided_residual"]
SMALL = {
    "guided_residual": {"features": 4, "blocks": 1},
    "guided_dual": {"features": 4, "encoder_blocks": 1, "blocks": 1},
}


def tiny(name: str, **kwargs) -> nn.Module:
    return build_model(name, **{**SMALL[name], **kwargs})


# ---------------------------------------------------------------------------------- networks
CASES = [
    # spatial_dims, target channels, guide channels, scale, lq spatial size
    (2, 6, 4, 2, (5, 7)),
    (2, 2, 10, 6, (3, 4)),
    (2, 3, 1, (1, 2), (5, 7)),
    (3, 1, 1, 2, (3, 4, 5)),
    (3, 2, 1, (1, 1, 4), (5, 6, 3)),  # a T1 guiding thick-slice T2 and FLAIR
]


@pytest.mark.parametrize("name", GUIDED)
@pytest.mark.parametrize(("dims", "channels", "guides", "scale", "size"), CASES)
def test_output_is_on_the_guide_grid(name, dims, channels, guides, scale, size):
    net = tiny(name, spatial_dims=dims, in_channels=channels, guide_channels=guides, scale=scale).eval()
    factors = [scale] * dims if isinstance(scale, int) else list(scale)
    hr = [n * s for n, s in zip(size, factors)]
    with torch.no_grad():
        out = net(torch.rand(2, channels, *size), torch.rand(2, guides, *hr))
    assert out.shape == (2, channels, *hr)


@pytest.mark.parametrize("name", GUIDED)
@pytest.mark.parametrize("dims", [2, 3])
def test_untrained_network_returns_the_interpolated_target(name, dims):
    scale = (2, 3) if dims == 2 else (1, 1, 4)
    net = tiny(name, spatial_dims=dims, in_channels=2, guide_channels=3, scale=scale).eval()
    lq = torch.rand(1, 2, *[4] * dims)
    guide = torch.rand(1, 3, *[4 * s for s in scale])
    with torch.no_grad():
        out = net(lq, guide)
        other = net(lq, torch.rand_like(guide))
    torch.testing.assert_close(out, interpolate(lq, list(scale), "fov"))
    torch.testing.assert_close(other, out)  # the zero-initialised tail ignores the guide at first


@pytest.mark.parametrize("name", GUIDED)
def test_the_guide_receives_gradients_once_training_starts(name):
    net = tiny(name, spatial_dims=2, in_channels=2, guide_channels=3, scale=2)
    lq, gt = torch.rand(2, 2, 6, 6), torch.rand(2, 2, 12, 12)
    guide = torch.rand(2, 3, 12, 12, requires_grad=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):  # the first step moves the zero tail, the second reaches the guide branch
        opt.zero_grad()
        guide.grad = None
        loss = (net(lq, guide) - gt).abs().mean()
        loss.backward()
        assert net.tail.weight.grad.abs().sum() > 0
        opt.step()
    assert guide.grad is not None and guide.grad.abs().sum() > 0
    first = net.head if name == "guided_residual" else net.guide_encoder[0]
    assert first.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", GUIDED)
def test_a_few_adam_steps_use_the_guide(name):
    # the target is the guide's first band: only a network that reads the guide can recover it
    net = tiny(name, spatial_dims=2, in_channels=1, guide_channels=2, scale=2)
    guide = torch.rand(4, 2, 16, 16)
    gt = guide[:, :1]
    lq = torch.nn.functional.avg_pool2d(gt, 2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        opt.zero_grad()
        loss = (net(lq, guide) - gt).abs().mean()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.7 * first


@pytest.mark.parametrize("name", GUIDED)
def test_tiles_equal_the_whole_image_away_from_their_margins(name):
    net = tiny(name, spatial_dims=2, in_channels=1, guide_channels=1, scale=2).eval()
    with torch.no_grad():  # a trained-looking tail, so that the guide branch matters
        net.tail.weight.normal_(0, 0.1)
    lq, guide = torch.rand(1, 1, 24, 24), torch.rand(1, 1, 48, 48)
    with torch.no_grad():
        whole = net(lq, guide)
        tile = net(lq[..., :, 8:24], guide[..., :, 16:48])
    # the receptive field is local: 8 low-resolution pixels of margin cover it at these sizes
    torch.testing.assert_close(tile[..., 16:], whole[..., 32:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tile[..., :4], whole[..., 16:20], atol=1e-5)  # the margin is needed


def test_registry_knows_which_networks_take_a_guide():
    assert [is_guided(n) for n in ("guided_residual", "guided_dual", "residual", "gan", "nope")] == [
        True,
        True,
        False,
        False,
        False,
    ]
    with pytest.raises(ModelError, match="needs guide_channels"):
        build_model("guided_residual", spatial_dims=2, in_channels=1, scale=2)
    with pytest.raises(ModelError, match="takes no guide"):
        build_model("residual", spatial_dims=2, in_channels=1, scale=2, guide_channels=4)
    with pytest.raises(ModelError, match="takes no guide"):
        build_model("gan", spatial_dims=2, in_channels=1, scale=2, guide_channels=4)
    with pytest.raises(ModelError, match="guide_channels must be > 0"):
        build_model("guided_dual", spatial_dims=2, in_channels=1, scale=2, guide_channels=0)


@pytest.mark.parametrize("name", GUIDED)
def test_config_rebuilds_the_same_guided_network(name):
    net = tiny(name, spatial_dims=3, in_channels=2, guide_channels=1, scale=(1, 1, 4))
    config = model_config(net)
    assert config["guide_channels"] == 1
    again = model_from_config(config)
    assert again.config == net.config
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in net.parameters())


def test_describe_models_counts_the_guide_branch():
    rows = {r["name"]: r for r in describe_models(spatial_dims=2, in_channels=6, scale=2, guide_channels=4)}
    more = {r["name"]: r for r in describe_models(spatial_dims=2, in_channels=6, scale=2, guide_channels=8)}
    for name in GUIDED:
        assert rows[name]["parameters"] < more[name]["parameters"]
        assert rows[name]["macs_per_output_voxel"] < more[name]["macs_per_output_voxel"]
    # guided_residual: its 2 * blocks + 1 convolutions of 32 -> 32 features run on the output grid
    assert rows["guided_residual"]["macs_per_output_voxel"] > 13 * 32 * 32 * 9
    assert rows["residual"]["parameters"] == more["residual"]["parameters"]


@pytest.mark.parametrize("name", GUIDED)
def test_torchscript_export_takes_the_guide(tmp_path, name):
    from aesr_sci.nets.export import export_model

    net = tiny(name, spatial_dims=2, in_channels=2, guide_channels=3, scale=2).eval()
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.1)
    report = export_model(net, tmp_path / "net.pt", example_shape=(1, 2, 6, 6))
    assert report["max_abs_diff"] < 1e-5
    loaded = torch.jit.load(report["path"])
    lq, guide = torch.rand(2, 2, 5, 7), torch.rand(2, 3, 10, 14)  # other sizes: axes are dynamic
    with torch.no_grad():
        torch.testing.assert_close(loaded(lq, guide), net(lq, guide), atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # the ONNX exporter is slow to import and trace
def test_onnx_export_takes_the_guide(tmp_path):
    from aesr_sci.nets.export import export_model, run_onnx

    net = tiny("guided_residual", spatial_dims=2, in_channels=2, guide_channels=3, scale=2).eval()
    with torch.no_grad():
        net.tail.weight.normal_(0, 0.1)
    report = export_model(net, tmp_path / "net.onnx", example_shape=(1, 2, 6, 6))
    assert report["max_abs_diff"] < 1e-4
    lq, guide = torch.rand(1, 2, 5, 7), torch.rand(1, 3, 10, 14)
    got, _ = run_onnx(tmp_path / "net.onnx", lq, guide)
    with torch.no_grad():
        torch.testing.assert_close(got, net(lq, guide), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------- guide grids
X0, Y0 = 585000.0, 4415000.0


def _pair(make_geotiff, tmp_path, *, guide_size=(40, 36), guide_res=10.0, dx=0.0, dy=0.0, crs="EPSG:32618"):
    target = make_geotiff(tmp_path / "t_20m.tif", bands=6, height=20, width=18, nodata=None)
    guide = make_geotiff(
        tmp_path / "g_10m.tif",
        bands=4,
        height=guide_size[0],
        width=guide_size[1],
        nodata=None,
        crs=crs,
        transform=Affine(guide_res, 0.0, X0 + dx, 0.0, -guide_res, Y0 + dy),
    )
    (tm, ts), (gm, gs) = read_meta(target), read_meta(guide)
    return tm, ts, gm, gs


def test_an_aligned_guide_gives_the_output_grid(make_geotiff, tmp_path):
    tm, ts, gm, gs = _pair(make_geotiff, tmp_path)
    grid = check_guide(tm, gm, 2, target_shape=ts, guide_shape=gs, guide_name="g_10m.tif")
    assert grid.shape == (40, 36) and not grid.cropped
    assert grid.target_window == ((0, 20), (0, 18)) and grid.guide_window == ((0, 40), (0, 36))
    np.testing.assert_array_equal(grid.meta.affine, gm.affine)  # exactly the guide's transform
    assert grid.meta.crs == gm.crs
    assert grid.meta.band_names == tm.band_names and grid.meta.dtype == tm.dtype
    # the same grid as zooming the target by the scale, field of view preserved
    np.testing.assert_allclose(grid.meta.affine, zoom_affine(tm.affine, 2, convention="fov"))


@pytest.mark.parametrize(
    ("guide_size", "target_window", "out_shape"),
    [
        ((41, 37), ((0, 20), (0, 18)), (40, 36)),  # a partial target pixel more: the guide is cropped
        ((38, 36), ((0, 19), (0, 18)), (38, 36)),  # the guide misses the last target row: both cropped
    ],
)
def test_far_ends_are_cropped_to_the_common_pixels(
    make_geotiff, tmp_path, guide_size, target_window, out_shape
):
    tm, ts, gm, gs = _pair(make_geotiff, tmp_path, guide_size=guide_size)
    grid = check_guide(tm, gm, 2, target_shape=ts, guide_shape=gs)
    assert grid.cropped and "cropped at the far end" in grid.crop_note
    assert grid.target_window == target_window and grid.shape == out_shape
    assert grid.guide_window == tuple((0, n) for n in out_shape)


def test_a_guide_in_another_crs_is_refused(make_geotiff, tmp_path):
    tm, ts, gm, gs = _pair(make_geotiff, tmp_path, crs="EPSG:32633")
    with pytest.raises(
        MismatchError, match=r"g_10m.tif: the guide is in EPSG:32633 but the target in EPSG:32618"
    ):
        check_guide(tm, gm, 2, target_shape=ts, guide_shape=gs, guide_name="g_10m.tif")


def test_a_wrong_pixel_size_names_both_sizes_and_the_expected_one(make_geotiff, tmp_path):
    tm, ts, gm, gs = _pair(make_geotiff, tmp_path, guide_res=5.0, guide_size=(80, 72))
    with pytest.raises(MismatchError) as err:
        check_guide(tm, gm, 2, target_shape=ts, guide_shape=gs)
    msg = str(err.value)
    assert "pixel size 5 x 5 m" in msg and "20 x 20 m" in msg and "is 10 x 10 m" in msg
    assert "use a model of scale 4" in msg and "gdalwarp -tr 10 10 -te" in msg
    assert "\n" not in msg


def test_a_shifted_guide_says_by_how_much_and_how_to_fix_it(make_geotiff, tmp_path):
    tm, ts, gm, gs = _pair(make_geotiff, tmp_path, dx=5.0, dy=-2.5)  # half and a quarter guide pixel
    with pytest.raises(MismatchError) as err:
        check_guide(tm, gm, 2, target_shape=ts, guide_shape=gs)
    msg = str(err.value)
    assert "shifted off the target's grid by 0.25 x 0.5 guide pixels (rows x columns; 2.5 x 5 m)" in msg
    # the fix puts the guide on the target's bounds: 18 x 20 m wide, 20 x 20 m high
    assert f"-te {X0:.6f} {Y0 - 400:.6f} {X0 + 360:.6f} {Y0:.6f} -r cubic" in msg


def test_a_guide_whose_corner_is_whole_pixels_away_is_refused_with_an_exact_fix(make_geotiff, tmp_path):
    tm, ts, gm, gs = _pair(make_geotiff, tmp_path, dx=-30.0)
    with pytest.raises(MismatchError, match=r"corner is 0 x -3 guide pixels .* -r near"):
        check_guide(tm, gm, 2, target_shape=ts, guide_shape=gs)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.filterwarnings("ignore::aesr_sci.errors.NoCRSWarning")
def test_rasters_without_georeferencing_are_matched_by_shape(make_geotiff, tmp_path):
    identity = Affine.identity()
    target = make_geotiff(tmp_path / "t.tif", bands=2, height=10, width=12, crs=None, transform=identity)
    guide = make_geotiff(tmp_path / "g.tif", bands=1, height=20, width=24, crs=None, transform=identity)
    (tm, ts), (gm, gs) = read_meta(target), read_meta(guide)
    grid = check_guide(tm, gm, 2, target_shape=ts, guide_shape=gs)
    assert grid.shape == (20, 24) and not grid.cropped
    with pytest.raises(MismatchError, match="does not cover one whole target pixel"):
        check_guide(tm, gm, 30, target_shape=ts, guide_shape=gs)


def test_a_t1_guides_a_thick_slice_volume_in_millimetres():
    from tests.conftest import OBLIQUE_AFFINE

    t2 = SpatialMeta(zoom_affine(OBLIQUE_AFFINE, (1, 1, 0.25), convention="fov"), format="nifti")
    t1 = SpatialMeta(OBLIQUE_AFFINE, format="nifti")
    grid = check_guide(t2, t1, (1, 1, 4), target_shape=(20, 18, 4), guide_shape=(20, 18, 16))
    assert grid.shape == (20, 18, 16)
    np.testing.assert_allclose(grid.meta.affine, OBLIQUE_AFFINE)
    shifted = t1.affine.copy()
    shifted[:3, 3] += OBLIQUE_AFFINE[:3, 2] * 0.5  # half a T1 voxel along the slice axis (1.25 mm)
    with pytest.raises(MismatchError, match=r"by 0 x 0 x 0.5 guide pixels \(voxel axes; 0 x 0 x 1.25 mm\)"):
        check_guide(
            t2, t1.replace(affine=shifted), (1, 1, 4), target_shape=(20, 18, 4), guide_shape=(20, 18, 16)
        )
    with pytest.raises(MismatchError, match="guide is 2D but the target is 3D"):
        check_guide(t2, SpatialMeta(np.eye(3)), 2, target_shape=(4, 4, 4), guide_shape=(8, 8))


def test_guide_band_counts_and_presence_are_checked():
    check_guide_bands(4, 4)
    check_guide_bands(0, None)
    with pytest.raises(
        MismatchError, match=r"g.tif: the guide has 3 band.* trained with 4 \(B2, B3, B4, B8\)"
    ):
        check_guide_bands(4, 3, guide_name="g.tif", names=("B2", "B3", "B4", "B8"))
    with pytest.raises(MismatchError, match="the model takes no guide"):
        check_guide_bands(0, 4)
    with pytest.raises(MismatchError, match="give it its guide, an image of 4 band"):
        check_guide_bands(4, None)


# ------------------------------------------------------------------------------- Wald pairs
def test_wald_degrade_is_dsen2s_blur_then_block_means():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    data = rng.random((2, 24, 30)).astype(np.float32)
    img = Image(data, SpatialMeta(np.eye(3)))
    for s in (2, 3):
        got = wald_degrade(img, s).data
        blurred = np.stack([gaussian_filter(b.astype(np.float64), 1.0 / s, truncate=4.0) for b in data])
        expected = blurred.reshape(2, 24 // s, s, 30 // s, s).mean(axis=(2, 4))
        # the borders differ only by the padding convention (reflect with or without the edge pixel)
        np.testing.assert_allclose(got[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], atol=1e-5)
    assert wald_degrade(img, 2, method="area").meta.provenance["degradation"]["method"] == "area"


def test_wald_triple_puts_the_degraded_guide_on_the_targets_grid():
    target_meta = SpatialMeta(np.array([[0.0, 20.0, 10.0], [-20.0, 0.0, -10.0], [0.0, 0.0, 1.0]]))
    guide_meta = target_meta.zoom(2, convention="fov")
    target = Image(np.random.default_rng(1).random((6, 11, 12)).astype(np.float32), target_meta)
    guide = Image(np.random.default_rng(2).random((4, 22, 24)).astype(np.float32), guide_meta)
    lq, lq_guide, gt = wald_triple(target, guide, 2)
    assert gt.spatial_shape == (10, 12) and lq.spatial_shape == (5, 6) and lq.channels == 6
    assert lq_guide.spatial_shape == gt.spatial_shape and lq_guide.channels == 4
    np.testing.assert_allclose(lq_guide.meta.affine, gt.meta.affine)
    np.testing.assert_allclose(lq.meta.affine, gt.meta.zoom(0.5, convention="fov").affine)
    with pytest.raises(DataError, match="crop both"):
        wald_triple(target, Image(guide.data[:, :20], guide_meta), 2)


# ------------------------------------------------------------------------ Sentinel-2 bands
def _product(make_geotiff, tmp_path, *, with_b10=True):
    kw = {"nodata": None, "crs": "EPSG:32633"}
    p10 = make_geotiff(
        tmp_path / "S2_10m.tif", bands=4, height=24, width=24, band_names=["B02", "B03", "B04", "B08"], **kw
    )
    p20 = make_geotiff(
        tmp_path / "S2_20m_B05-B06-B07-B8A-B11-B12.tif",
        bands=6,
        height=12,
        width=12,
        band_names=[""] * 6,
        **kw,
    )
    names60 = ["B01 coastal", "B09 water vapour"] + (["B10 cirrus"] if with_b10 else [])
    p60 = make_geotiff(
        tmp_path / "S2_60m.tif", bands=len(names60), height=4, width=4, band_names=names60, **kw
    )
    return p10, p20, p60


def test_sentinel2_band_names_are_read_in_their_usual_spellings():
    assert [
        sentinel2_band(t) for t in ("B2", "B02", "b8A", "B8A nir-narrow", "B10 cirrus", "B1", "B13", "SWIR")
    ] == [
        "B2",
        "B2",
        "B8A",
        "B8A",
        "B10",
        "B1",
        None,
        None,
    ]


def test_sentinel2_bands_come_in_wavelength_order_with_their_sources(make_geotiff, tmp_path):
    p10, p20, p60 = _product(make_geotiff, tmp_path)
    bands = sentinel2_bands([p60, p20, p10])
    assert [b.name for b in bands] == [
        "B1",
        "B2",
        "B3",
        "B4",
        "B5",
        "B6",
        "B7",
        "B8",
        "B8A",
        "B9",
        "B10",
        "B11",
        "B12",
    ]
    by_name = {b.name: b for b in bands}
    assert by_name["B8A"].path == str(p20) and by_name["B8A"].index == 3  # named by the file name
    assert by_name["B8"].path == str(p10) and by_name["B8"].index == 3 and by_name["B8"].resolution == 10
    assert [b.wavelength for b in bands] == sorted(b.wavelength for b in bands)
    x2 = sentinel2_plan(bands, 2)
    assert [b.name for b in x2.targets] == ["B5", "B6", "B7", "B8A", "B11", "B12"]
    assert [b.name for b in x2.guides] == ["B2", "B3", "B4", "B8"]
    x6 = sentinel2_plan(bands, 6)
    assert [b.name for b in x6.targets] == ["B1", "B9", "B10"]
    assert [b.name for b in x6.guides] == ["B2", "B3", "B4", "B8", "B5", "B6", "B7", "B8A", "B11", "B12"]


def test_sentinel2_refusals(make_geotiff, tmp_path):
    p10, p20, p60 = _product(make_geotiff, tmp_path, with_b10=False)
    assert [b.name for b in sentinel2_plan(sentinel2_bands([p10, p20, p60]), 6).targets] == ["B1", "B9"]
    with pytest.raises(DataError, match="needs the 20 m band"):
        sentinel2_plan(sentinel2_bands([p10]), 2)
    with pytest.raises(DataError, match=r"upscale by 2 .* or 6"):
        sentinel2_plan(sentinel2_bands([p10, p20]), 4)
    with pytest.raises(DataError, match="band B2 is also in"):
        sentinel2_bands([p10, p10])
    odd = make_geotiff(
        tmp_path / "odd.tif", bands=2, height=4, width=4, band_names=["B2", "NIR"], nodata=None
    )
    with pytest.raises(DataError, match=r"odd.tif: band 2 is not named as a Sentinel-2 band .*'NIR'"):
        sentinel2_bands([odd])
    mixed = make_geotiff(
        tmp_path / "mixed.tif", bands=2, height=4, width=4, band_names=["B2", "B5"], nodata=None
    )
    with pytest.raises(DataError, match="mixes bands of 10 m and 20 m"):
        sentinel2_bands([mixed])
    assert ProductBand("B12", "x.tif", 5).resolution == 20


# ------------------------------------------------------------------ pansharpening and metrics
def _texture(bands: int, size: int, seed: int) -> np.ndarray:
    """Positive smooth-plus-fine texture: detail at every scale, as a real guide has."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    noise = rng.random((bands, size, size))
    return 1.0 + np.stack([gaussian_filter(b, 1.0) + 0.5 * gaussian_filter(b, 4.0) for b in noise])


def _rmse_of(method_out: np.ndarray, truth: np.ndarray) -> float:
    from aesr_sci.metrics import rmse

    border = (slice(None), slice(8, -8), slice(8, -8))  # interpolation edges are not the question here
    return rmse(truth[border], method_out[border])


def test_hpf_recovers_a_target_that_is_a_linear_combination_of_the_guide():
    from aesr_sci.baselines import upsample as baseline
    from aesr_sci.pansharpen import hpf

    guide = _texture(3, 64, seed=0)
    mix = np.array([[0.5, 0.3, 0.2], [0.1, -0.4, 1.2]])
    truth = np.tensordot(mix, guide, axes=(1, 0)) + np.array([0.2, 3.0])[:, None, None]
    lq = wald_degrade(Image(truth.astype(np.float32), SpatialMeta(np.eye(3))), 2).data.astype(np.float64)
    cubic = _rmse_of(baseline(lq, 2, method="cubic"), truth)
    sharpened = _rmse_of(hpf(lq, guide, 2), truth)
    assert sharpened < cubic / 50  # exact but for float32 rounding of the degraded target


def test_brovey_recovers_bands_proportional_to_the_pan():
    from aesr_sci.baselines import upsample as baseline
    from aesr_sci.pansharpen import brovey, pansharpen

    pan = _texture(1, 64, seed=1)
    truth = np.concatenate([0.5 * pan, 1.5 * pan, 3.0 * pan])
    lq = wald_degrade(Image(truth.astype(np.float32), SpatialMeta(np.eye(3))), 4).data.astype(np.float64)
    cubic = _rmse_of(baseline(lq, 4, method="cubic"), truth)
    sharpened = _rmse_of(brovey(lq, pan, 4), truth)
    assert sharpened < cubic / 20
    np.testing.assert_allclose(pansharpen(lq, pan, 4, method="brovey"), brovey(lq, pan, 4))
    # bands proportional to the pan are also a linear combination of it: the additive method recovers them
    assert _rmse_of(pansharpen(lq, pan, 4, method="hpf"), truth) < cubic / 20


def test_pansharpening_works_on_volumes_with_a_per_axis_scale():
    from aesr_sci.pansharpen import hpf

    rng = np.random.default_rng(3)
    t1 = 1.0 + rng.random((1, 8, 8, 16))
    truth = 2.0 * t1 - 0.5
    lq = wald_degrade(Image(truth.astype(np.float32), SpatialMeta(np.eye(4))), (1, 1, 4)).data
    out = hpf(lq.astype(np.float64), t1, (1, 1, 4))
    assert out.shape == truth.shape
    np.testing.assert_allclose(out, truth, atol=1e-4)


def test_pansharpening_refusals():
    from aesr_sci.pansharpen import band_weights, brovey, pansharpen

    with pytest.raises(DataError, match=r"not the target's \(4, 4\) times the scale \[2, 2\]"):
        pansharpen(np.ones((1, 4, 4)), np.ones((1, 9, 8)), 2)
    with pytest.raises(DataError, match="unknown pansharpening method 'ihs'"):
        pansharpen(np.ones((1, 4, 4)), np.ones((1, 8, 8)), 2, method="ihs")
    with pytest.raises(DataError, match="one weight per guide band"):
        brovey(np.ones((1, 4, 4)), np.ones((2, 8, 8)), 2, guide_weights=[1.0])
    with pytest.raises(DataError, match="cannot fit 3 weights"):
        band_weights(
            np.ones((1, 4, 4)),
            np.ones((2, 4, 4)),
            mask=np.eye(4, dtype=bool)[:, ::-1] & np.eye(4, dtype=bool),
        )


def test_spectral_angle_is_zero_for_scaled_spectra_and_ninety_for_orthogonal_ones():
    from aesr_sci.metrics import spectral_angle

    rng = np.random.default_rng(0)
    a = rng.random((4, 6, 5)) + 0.1
    assert spectral_angle(a, a) == pytest.approx(0.0, abs=1e-5)
    assert spectral_angle(a, 7.5 * a) == pytest.approx(0.0, abs=1e-5)
    ortho = np.zeros((2, 3, 3))
    ortho[0] = 1.0
    other = np.zeros((2, 3, 3))
    other[1] = 2.0
    assert spectral_angle(ortho, other) == pytest.approx(90.0)
    # 45 degrees in half the pixels and 0 in the other half: the mean over the mask
    test = ortho.copy()
    test[1, :, :2] = 1.0
    mask = np.ones((3, 3), bool)
    assert spectral_angle(ortho, test, mask=mask) == pytest.approx(45.0 * 6 / 9)
    mask[:, 2] = False
    assert spectral_angle(ortho, test, mask=mask) == pytest.approx(45.0)
    assert np.isnan(spectral_angle(np.zeros((2, 3, 3)), ortho))  # zero spectra are skipped
    with pytest.raises(ValueError, match="different shapes"):
        spectral_angle(a, a[:3])


def test_rmse_is_masked():
    from aesr_sci.metrics import rmse

    ref = np.zeros((2, 4))
    test = np.zeros((2, 4))
    test[1] = 3.0
    assert rmse(ref, test) == pytest.approx(np.sqrt(4.5))
    assert rmse(ref, test, mask=np.array([[True] * 4, [False] * 4])) == 0.0
    with pytest.raises(ValueError, match="different shapes"):
        rmse(ref, test[:1])


# ------------------------------------------------------------------------------ recipes
GUIDED_RECIPES = ["sentinel2_guided_x2", "sentinel2_guided_x6", "landsat_pan_x2"]


def _recipe(name: str):
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "recipes" / f"{name}.yaml"


@pytest.mark.parametrize("name", GUIDED_RECIPES)
def test_guided_recipes_pair_one_guide_entry_per_target_entry(name):
    from aesr_sci.recipe import load_recipe

    recipe = load_recipe(_recipe(name))
    assert recipe.model.name == "guided_residual" and is_guided(recipe.model.name)
    assert len(recipe.data.guides) == len(recipe.data.paths) >= 1
    assert len(recipe.data.val_guides) == len(recipe.data.val_paths)
    # DSen2's Wald degradation: sigma 1 / scale high-resolution pixels, then block means
    scale = max(recipe.data.scale_tuple())
    assert recipe.data.degradation.method == "gaussian"
    assert recipe.data.degradation.sigma == pytest.approx(1 / scale, abs=1e-4)


def test_sentinel2_recipes_point_at_the_products_own_resolutions():
    from aesr_sci.recipe import load_recipe

    x2 = load_recipe(_recipe("sentinel2_guided_x2")).data
    assert x2.paths[0].endswith("_20m.tif") and x2.guides[0].endswith("_10m.tif")
    x6 = load_recipe(_recipe("sentinel2_guided_x6")).data
    assert x6.paths[0].endswith("_60m.tif")
    assert [g[-8:] for g in x6.guides[0]] == ["_10m.tif", "_20m.tif"]  # finest first


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.paths=[a_20m.tif,b_20m.tif]", "data.guides=[a_10m.tif]"],
            "data.guides: has 1 entries but data.paths has 2: give one guide",
        ),
        (
            ["data.guides=[[a_10m.tif, a_20m.tif]]", "data.val_guides=[b_10m.tif]"],
            "data.val_guides: every entry must name the same number",
        ),
        (["data.val_guides=[]"], "data.val_guides: data.guides is set, so data.val_paths needs its guides"),
        (["data.guides=[]"], "data.val_guides: set but data.guides is empty"),
        (["data.guides=[[]]"], "data.guides: an entry is an empty list"),
    ],
)
def test_mismatched_guide_lists_are_one_line_recipe_errors(overrides, message):
    from aesr_sci.errors import RecipeError
    from aesr_sci.recipe import load_recipe

    path = _recipe("sentinel2_guided_x2")
    with pytest.raises(RecipeError) as err:
        load_recipe(path, overrides=overrides)
    lines = str(err.value).splitlines()
    assert any(line.startswith(f"{path}: {message}") for line in lines), lines


def test_guides_can_be_set_from_the_command_line_in_the_order_of_the_paths():
    from aesr_sci.recipe import load_recipe

    with pytest.warns(UserWarning, match="validation files are dropped"):
        recipe = load_recipe(
            _recipe("sentinel2_guided_x2"),
            overrides=["data.paths=[a_20m.tif,b_20m.tif]", "data.guides=[a_10m.tif,b_10m.tif]"],
        )
    assert recipe.data.guides == ["a_10m.tif", "b_10m.tif"] and recipe.data.val_paths == []
    assert "guides:" in recipe.to_yaml()


def test_train_check_passes_a_guided_recipe_with_aligned_guides(tmp_path, make_geotiff):
    from click.testing import CliRunner

    from aesr_sci.cli import main

    kw = {"nodata": None}
    for scene in ("a", "b"):
        make_geotiff(tmp_path / f"{scene}_20m.tif", bands=6, height=48, width=48, **kw)
        make_geotiff(
            tmp_path / f"{scene}_10m.tif",
            bands=4,
            height=96,
            width=96,
            transform=Affine(10.0, 0, 585000.0, 0, -10.0, 4415000.0),
            **kw,
        )
    result = CliRunner().invoke(
        main,
        [
            "train",
            str(_recipe("sentinel2_guided_x2")),
            "--check",
            "--set",
            f"data.paths=[{tmp_path / 'a_20m.tif'}]",
            "--set",
            f"data.guides=[{tmp_path / 'a_10m.tif'}]",
            "--set",
            f"data.val_paths=[{tmp_path / 'b_20m.tif'}]",
            "--set",
            f"data.val_guides=[{tmp_path / 'b_10m.tif'}]",
            "--set",
            "data.patch_size=32",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 training and 1 validation file(s), 6 channel(s)" in result.output
