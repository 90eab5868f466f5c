"""Sliding-window inference: geometry, stitching, units and dtype, nodata, TTA, consistency, mismatches.

Most tests use stand-in models whose output is known exactly (a nearest-neighbour upsampler), so the
stitching and the metadata are tested without training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import save_model_dir

from aesr_sci.checkpoint import LoadedModel, load_model
from aesr_sci.cli import main
from aesr_sci.data.degrade import Degradation
from aesr_sci.errors import MismatchError, OutputExistsError
from aesr_sci.infer import project_consistent, upscale, upscale_files
from aesr_sci.io import read, write
from aesr_sci.nets import build_model
from aesr_sci.spatial import Image, SpatialMeta, voxel_to_world, zoom_affine


class Nearest(torch.nn.Module):
    """Stand-in model: nearest-neighbour upsampling, exactly known output, flip-equivariant."""

    def __init__(self, scale: tuple[int, ...]) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for ax, s in enumerate(self.scale, start=2):
            x = torch.repeat_interleave(x, s, dim=ax)
        return x


def stand_in(
    scale: tuple[int, ...],
    *,
    channels: int = 1,
    method: str = "area",
    normalization: dict | None = None,
    patch: list[int] | None = None,
    network: torch.nn.Module | None = None,
) -> LoadedModel:
    deg = Degradation(method, scale)
    config = {
        "network": {
            "name": "stand-in",
            "spatial_dims": len(scale),
            "in_channels": channels,
            "scale": list(scale),
        },
        "degradation": {**deg.to_dict(), "convention": deg.convention},
        "normalization": normalization or {"method": "none"},
        "inference_patch": patch,
    }
    return LoadedModel(network=network or Nearest(scale), config=config, path=Path("stand-in"))


def oblique_affine() -> np.ndarray:
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([1.2, 0.9, 3.0])
    a[:3, 3] = [-40.0, 12.5, 7.0]
    return a


def volume(shape=(10, 12, 8), channels=1, seed=0) -> Image:
    rng = np.random.default_rng(seed)
    data = rng.random((channels, *shape)).astype(np.float32) * 100
    return Image(data, SpatialMeta(oblique_affine(), format="nifti", dtype="float32"))


@pytest.mark.parametrize("method,convention", [("area", "fov"), ("kspace", "origin")])
def test_values_and_geometry_follow_the_convention(method: str, convention: str) -> None:
    img = volume()
    model = stand_in((2, 2, 2), method=method, patch=[4, 4, 4])
    out = upscale(img, model)
    assert out.data.shape == (1, 20, 24, 16)
    expected = img.data.repeat(2, 1).repeat(2, 2).repeat(2, 3)
    np.testing.assert_allclose(out.data, expected, rtol=1e-5)  # windows stitched without seams
    np.testing.assert_allclose(out.affine, zoom_affine(img.affine, 2, convention=convention))
    if convention == "origin":  # the first voxel centre stays put
        np.testing.assert_allclose(out.world([0, 0, 0]), img.world([0, 0, 0]))
    else:  # the outer corners stay put
        np.testing.assert_allclose(np.sort(out.corners(), 0), np.sort(img.corners(), 0), atol=1e-9)
    assert out.meta.provenance["grid_convention"] == convention
    assert out.meta.provenance["scale"] == [2, 2, 2]


def test_through_plane_scale_moves_only_the_slice_axis() -> None:
    img = volume((6, 6, 5))
    img = img.replace(meta=img.meta.replace(affine=np.diag([1.0, 1.0, 4.0, 1.0])))
    out = upscale(img, stand_in((1, 1, 4), method="slice"))
    assert out.spatial_shape == (6, 6, 20)
    assert out.meta.spacing == pytest.approx((1.0, 1.0, 1.0))
    # fov: output slice centres at z = -1.5, -0.5, ... (input slice 0 spans -2..2 mm)
    np.testing.assert_allclose(voxel_to_world(out.affine, [[0, 0, 0], [0, 0, 1]])[:, 2], [-1.5, -0.5])


def test_tiled_matches_whole_image_on_a_real_network() -> None:
    torch.manual_seed(0)
    net = build_model("residual", spatial_dims=2, in_channels=2, scale=2, features=8, blocks=2).eval()
    with torch.no_grad():  # make the residual branch matter: the net is not translation-trivial
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rng = np.random.default_rng(0)
    data = rng.random((2, 128, 96)).astype(np.float32)
    img = Image(
        data, SpatialMeta(np.array([[0, 10.0, 500.0], [-10.0, 0, 9000.0], [0, 0, 1]]), format="geotiff")
    )
    model = stand_in((2, 2), channels=2, network=net)
    whole = upscale(img, model, patch_size=0, precision="float32")
    # windows of 24 with a halo covering the receptive field: equal to float32 rounding
    tiled = upscale(img, model, patch_size=[24, 24], precision="float32")
    rng_out = float(whole.data.max() - whole.data.min())
    assert np.abs(whole.data - tiled.data).max() < 1e-5 * rng_out


def test_integer_raster_round_trip_keeps_dtype_units_bounds_and_nodata(tmp_path: Path) -> None:
    import rasterio
    from rasterio.transform import from_origin

    data = np.full((3, 40, 36), 1200, dtype=np.uint16)
    data[:, 10:30, 8:28] = np.arange(20 * 20, dtype=np.uint16).reshape(20, 20) * 10 + 500
    data[:, :4, :] = 0  # nodata collar
    data[:, :, -3:] = 0
    src = tmp_path / "tile.tif"
    profile = dict(
        driver="GTiff",
        width=36,
        height=40,
        count=3,
        dtype="uint16",
        crs="EPSG:32618",
        transform=from_origin(500000, 4200000, 20, 20),
        nodata=0,
    )
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = ("B05", "B06", "B07")
    model = stand_in(
        (2, 2),
        channels=3,
        method="gaussian",
        normalization={"method": "fixed", "scale": 1e-4, "offset": 0.0},
        patch=[16, 16],
    )
    before = src.read_bytes()
    (out_path,) = upscale_files(model, [src], tmp_path / "tile_x2.tif")
    assert src.read_bytes() == before  # the input is never modified
    with rasterio.open(src) as a, rasterio.open(out_path) as b:
        assert b.dtypes == ("uint16",) * 3
        assert b.crs == a.crs
        assert b.bounds == pytest.approx(a.bounds)
        assert b.transform.almost_equals(a.transform * a.transform.scale(0.5))
        assert b.nodata == 0
        assert b.descriptions == ("B05", "B06", "B07")
        out = b.read()
    # nodata stays nodata exactly where its support was nodata, and valid pixels are untouched
    expected = data.repeat(2, 1).repeat(2, 2)
    np.testing.assert_array_equal(out, expected)


def test_nodata_never_reaches_valid_pixels() -> None:
    data = np.full((1, 16, 16), 0.5, np.float32)
    data[:, :, :6] = -9999.0
    mask = np.ones((16, 16), bool)
    mask[:, :6] = False
    img = Image(data, SpatialMeta(np.eye(3), nodata=-9999.0, format="geotiff"), mask=mask)
    blur = torch.nn.Conv2d(1, 1, 5, padding=2, bias=False, padding_mode="replicate")
    torch.nn.init.constant_(blur.weight, 1 / 25)
    net = torch.nn.Sequential(blur, Nearest((2, 2)))
    out = upscale(img, stand_in((2, 2), network=net, patch=[8, 8]))
    valid = out.mask
    assert not valid[:, :12].any() and valid[:, 12:].all()
    np.testing.assert_allclose(out.data[0][valid], 0.5, atol=1e-5)  # no -9999 blurred in


def test_tta_keeps_an_equivariant_model_unchanged() -> None:
    img = volume((8, 8, 8))
    model = stand_in((2, 2, 2), patch=[8, 8, 8])
    np.testing.assert_allclose(upscale(img, model, tta=True).data, upscale(img, model).data, rtol=1e-6)


@pytest.mark.parametrize(
    "method,scale", [("kspace", (2, 2, 2)), ("gaussian", (2, 2, 2)), ("slice", (1, 1, 4))]
)
def test_consistency_projection_reproduces_the_input(method: str, scale: tuple[int, ...]) -> None:
    deg = Degradation(method, scale)
    rng = np.random.default_rng(3)
    lq = torch.from_numpy(rng.random((1, 1, 8, 8, 6)))
    hr = torch.from_numpy(rng.random((1, 1, *(n * s for n, s in zip((8, 8, 6), scale)))))
    proj = project_consistent(hr, lq, deg)
    err = (deg.apply(proj) - lq).abs().max().item()
    assert err < 1e-6, err
    # and it moves the estimate no more than needed: projecting twice changes nothing
    np.testing.assert_allclose(project_consistent(proj, lq, deg).numpy(), proj.numpy(), atol=1e-8)


def test_upscale_with_consistency_flag() -> None:
    img = volume((8, 8, 8))
    out = upscale(img, stand_in((2, 2, 2), method="kspace"), consistency=True)
    again = Degradation("kspace", (2, 2, 2)).apply(torch.from_numpy(out.data[None]).double())
    np.testing.assert_allclose(again[0].numpy(), img.data, atol=1e-3)


def test_mismatched_bands_and_dimensions() -> None:
    with pytest.raises(MismatchError, match="expects 6 band"):
        upscale(Image(np.zeros((4, 8, 8), np.float32), SpatialMeta(np.eye(3))), stand_in((2, 2), channels=6))
    with pytest.raises(MismatchError, match="3D"):
        upscale(Image(np.zeros((1, 8, 8), np.float32), SpatialMeta(np.eye(3))), stand_in((2, 2, 2)))
    iso = volume((6, 6, 6))
    with pytest.raises(MismatchError, match="thick slices"):
        upscale(iso.replace(meta=iso.meta.replace(affine=np.eye(4))), stand_in((1, 1, 4), method="slice"))


def _saved_model(tmp_path: Path, channels: int = 1) -> Path:
    return save_model_dir(tmp_path, spatial_dims=2, channels=channels, method="area")


def test_saved_model_loads_without_pickle_and_predicts(tmp_path: Path) -> None:
    model_dir = _saved_model(tmp_path)
    loaded = load_model(model_dir)
    assert loaded.scale == (2, 2) and loaded.convention == "fov"
    img = Image(np.random.default_rng(0).random((1, 20, 20)).astype(np.float32), SpatialMeta(np.eye(3)))
    assert upscale(img, model_dir).spatial_shape == (40, 40)


def test_cli_refuses_mismatch_and_existing_output(tmp_path: Path) -> None:
    model_dir = _saved_model(tmp_path, channels=2)
    rgb = Image(np.zeros((3, 12, 12), np.float32), SpatialMeta(np.eye(3), crs="EPSG:32618", format="geotiff"))
    src = write(rgb, tmp_path / "rgb.tif")
    result = CliRunner().invoke(main, ["upscale", str(model_dir), str(src), str(tmp_path / "out.tif")])
    assert result.exit_code == 2
    assert "expects 2 band(s) but the input has 3" in result.output
    assert isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out.tif").exists()
    gray = write(Image(np.ones((2, 12, 12), np.float32), rgb.meta), tmp_path / "gray.tif")
    existing = tmp_path / "exists.tif"
    existing.write_bytes(b"keep me")
    result = CliRunner().invoke(main, ["upscale", str(model_dir), str(gray), str(existing)])
    assert result.exit_code == 2 and "already exists" in result.output
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(OutputExistsError):
        upscale_files(model_dir, [gray], existing)


@pytest.mark.parametrize("consistency", [False, True])
def test_streaming_matches_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, consistency: bool
) -> None:
    import aesr_sci.infer as infer

    rng = np.random.default_rng(5)
    ramp = np.linspace(0, 1, 70)[None, None, :] * np.linspace(1, 3, 90)[None, :, None]
    data = 800 + 4000 * ramp + 300 * rng.random((2, 90, 70))  # brightness varies across the raster
    img = Image(
        data.astype(np.uint16),
        SpatialMeta(
            np.array([[0, 30.0, 1e5], [-30.0, 0, 5e6], [0, 0, 1]]), crs="EPSG:32618", format="geotiff"
        ),
    )
    src = write(img, tmp_path / "big.tif")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.Tanh(), Nearest((2, 2)))
    model = stand_in((2, 2), channels=2, network=net, normalization={"method": "percentile"})
    (mem_path,) = upscale_files(model, [src], tmp_path / "mem.tif", stream=False, consistency=consistency)
    calls = []
    original = infer._upscale_streaming
    monkeypatch.setattr(infer, "_upscale_streaming", lambda *a, **k: calls.append(1) or original(*a, **k))
    (stream_path,) = upscale_files(
        model, [src], tmp_path / "stream.tif", stream=True, block=32, consistency=consistency
    )
    assert calls, "the streaming path was not used"
    a, b = read(mem_path), read(stream_path)
    np.testing.assert_allclose(a.affine, b.affine)
    assert np.abs(a.data.astype(int) - b.data.astype(int)).max() <= 1  # 1 DN
    # the test can fail: statistics fitted per block give each block its own intensity mapping
    monkeypatch.setattr(infer, "raster_statistics", lambda *_a: None)
    (per_block,) = upscale_files(model, [src], tmp_path / "blocks.tif", stream=True, block=32)
    assert np.abs(a.data.astype(int) - read(per_block).data.astype(int)).max() > 10


def test_large_rasters_stream_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import aesr_sci.infer as infer

    img = Image(np.ones((1, 40, 30), np.float32), SpatialMeta(np.eye(3), crs="EPSG:32618", format="geotiff"))
    src = write(img, tmp_path / "a.tif")
    monkeypatch.setattr(infer, "_STREAM_VALUES", 1000)
    calls = []
    original = infer._upscale_streaming
    monkeypatch.setattr(infer, "_upscale_streaming", lambda *a, **k: calls.append(1) or original(*a, **k))
    upscale_files(stand_in((2, 2)), [src], tmp_path / "b.tif", consistency=True)
    assert calls and read(tmp_path / "b.tif").spatial_shape == (80, 60)


def test_single_band_model_serves_every_band() -> None:
    img = Image(np.random.default_rng(2).random((3, 8, 8)).astype(np.float32), SpatialMeta(np.eye(3)))
    out = upscale(img, stand_in((2, 2), channels=1, normalization={"method": "percentile"}))
    assert out.data.shape == (3, 16, 16)
    np.testing.assert_allclose(out.data, img.data.repeat(2, 1).repeat(2, 2), rtol=1e-5, atol=1e-6)
