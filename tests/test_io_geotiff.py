"""GeoTIFF adapter: transforms, masks, metadata round trips, windows, COG, streaming writer, errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags

from aesr_sci import io
from aesr_sci.errors import DataError, FileFormatError, FileReadError, NoCRSWarning, OutputExistsError
from aesr_sci.io.geotiff import affine_to_transform, transform_to_affine
from aesr_sci.spatial import Image

ROTATED = Affine(10.0, 0.0, 400000.0, 0.0, -10.0, 5000000.0) @ Affine.rotation(17.0)
SOUTH_UP = Affine(20.0, 0.0, 585000.0, 0.0, 20.0, 4400000.0)


def _same_file_content(a, b):
    with rasterio.open(a) as sa, rasterio.open(b) as sb:
        assert sa.profile == sb.profile
        np.testing.assert_array_equal(sa.read(), sb.read())
        np.testing.assert_array_equal(sa.dataset_mask(), sb.dataset_mask())
        assert sa.descriptions == sb.descriptions and sa.tags() == sb.tags()


def test_read_utm_raster(geotiff_path):
    img = io.read(geotiff_path)
    with rasterio.open(geotiff_path) as src:
        raw, transform = src.read(), src.transform
    assert img.data.shape == (3, 40, 36) and img.data.dtype == np.uint16
    np.testing.assert_array_equal(img.data, raw)
    assert CRS.from_wkt(img.meta.crs) == CRS.from_epsg(32618)
    assert img.meta.nodata == 0 and img.meta.band_names == ("B1", "B2", "B3")
    assert img.mask is not None and img.mask[:4].sum() == 0 and img.mask[4:-4, 4:-4].all()
    # pixel centre (row, col) -> (x, y) equals rasterio's transform at (col + 0.5, row + 0.5)
    for r, c in [(0, 0), (39, 35), (7, 20)]:
        np.testing.assert_allclose(img.world((r, c)), transform @ (c + 0.5, r + 0.5))


def test_read_meta_without_pixels(geotiff_path):
    meta, shape = io.read_meta(geotiff_path)
    assert shape == (3, 40, 36) and meta.dtype == "uint16" and meta.nodata == 0


@pytest.mark.parametrize("transform", [Affine(20.0, 0.0, 585000.0, 0.0, -20.0, 4415000.0), ROTATED, SOUTH_UP])
def test_transform_conversion_is_exact(transform):
    affine = transform_to_affine(transform)
    assert affine_to_transform(affine) == transform
    for r, c in [(0, 0), (3, 5), (-0.5, -0.5)]:
        np.testing.assert_allclose(affine[:2, :2] @ [r, c] + affine[:2, 2], transform @ (c + 0.5, r + 0.5))


@pytest.mark.parametrize(
    ("bands", "dtype", "nodata"),
    [(1, "uint8", 0), (3, "uint16", 0), (6, "int16", -9999), (3, "float32", np.nan), (2, "float32", None)],
)
@pytest.mark.parametrize("transform", [None, ROTATED, SOUTH_UP])
def test_round_trip_bands_dtypes_transforms(tmp_path, make_geotiff, bands, dtype, nodata, transform):
    src = make_geotiff(
        tmp_path / "in.tif", bands=bands, dtype=dtype, nodata=nodata, transform=transform, band_names=None
    )
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    img = io.read(src)
    out = io.write(img, tmp_path / "out.tif")
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    back = io.read(out)
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert b.transform == a.transform and b.crs == a.crs and b.dtypes == a.dtypes
        assert b.descriptions == a.descriptions
        assert (b.nodata == a.nodata) or (np.isnan(a.nodata) and np.isnan(b.nodata))
        np.testing.assert_array_equal(b.read(), a.read())
        assert b.profile["tiled"] and b.compression.name == "deflate"
    np.testing.assert_array_equal(back.affine, img.affine)
    assert (back.mask is None) == (img.mask is None)
    if img.mask is not None:
        np.testing.assert_array_equal(back.mask, img.mask)


def test_internal_mask_round_trip(tmp_path, make_geotiff):
    valid = np.ones((40, 36), bool)
    valid[:10, :] = False
    src = make_geotiff(tmp_path / "m.tif", nodata=None, internal_mask=valid)
    img = io.read(src)
    np.testing.assert_array_equal(img.mask, valid)
    out = io.write(img, tmp_path / "m_out.tif")
    with rasterio.open(out) as dst:
        assert dst.nodata is None and MaskFlags.per_dataset in dst.mask_flag_enums[0]
    np.testing.assert_array_equal(io.read(out).mask, valid)


def test_metadata_round_trip(tmp_path, make_geotiff):
    src = make_geotiff(
        tmp_path / "meta.tif",
        bands=3,
        dtype="uint8",
        band_names=["red", "green", "blue"],
        scales=[0.5, 1.0, 2.0],
        offsets=[0.0, -1.0, 3.5],
        units=["W/m2", "", "W/m2"],
        tags={"SENSOR": "synthetic", "DATE": "2020-05-18"},
        band_tags=[{"WAVELENGTH": "665"}, {}, {"WAVELENGTH": "490"}],
        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue],
    )
    out = io.write(io.read(src), tmp_path / "meta_out.tif")
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert b.descriptions == ("red", "green", "blue")
        assert b.scales == a.scales and b.offsets == a.offsets and b.units == a.units
        assert b.colorinterp == a.colorinterp
        assert b.tags()["SENSOR"] == "synthetic" and b.tags()["DATE"] == "2020-05-18"
        assert b.tags(1) == a.tags(1) and b.tags(3) == a.tags(3)


def test_windowed_read(geotiff_path):
    full = io.read(geotiff_path)
    part = io.read(geotiff_path, window=((5, 25), (10, 36)))
    np.testing.assert_array_equal(part.data, full.data[:, 5:25, 10:36])
    np.testing.assert_array_equal(part.mask, full.mask[5:25, 10:36])
    np.testing.assert_allclose(part.world((0, 0)), full.world((5, 10)))
    with rasterio.open(geotiff_path) as src:
        expected = src.window_transform(rasterio.windows.Window(10, 5, 26, 20))
    assert affine_to_transform(part.affine).almost_equals(expected, precision=1e-9)


def test_missing_crs_warns_and_keeps_going(tmp_path, make_geotiff):
    src = make_geotiff(tmp_path / "nocrs.tif", crs=None)
    with pytest.warns(NoCRSWarning, match="no coordinate reference system"):
        img = io.read(src)
    assert img.meta.crs is None
    out = io.write(img, tmp_path / "nocrs_out.tif")
    with rasterio.open(out) as dst:
        assert dst.crs is None and dst.transform == Affine(20.0, 0.0, 585000.0, 0.0, -20.0, 4415000.0)


def test_nan_in_valid_pixels_is_a_data_error(tmp_path, make_geotiff):
    data = np.ones((1, 8, 8), np.float32)
    data[0, 3, 3] = np.nan
    bad = make_geotiff(
        tmp_path / "nan.tif", bands=1, height=8, width=8, dtype="float32", nodata=None, data=data
    )
    with pytest.raises(DataError, match=r"1 of 64 values are NaN or Inf.*nodata"):
        io.read(bad)
    ok = make_geotiff(
        tmp_path / "nan_nodata.tif",
        bands=1,
        height=8,
        width=8,
        dtype="float32",
        nodata=np.nan,
        nodata_border=0,
        data=data,
    )
    img = io.read(ok)
    assert not img.mask[3, 3] and img.mask.sum() == 63


def test_not_a_tiff(tmp_path):
    fake = tmp_path / "notes.tif"
    fake.write_text("this is a text file, not a raster\n")
    with pytest.raises(FileFormatError, match="not a TIFF file"):
        io.read(fake)


def test_truncated_tiff_is_a_read_error(tmp_path, make_geotiff):
    src = make_geotiff(tmp_path / "cut.tif", height=200, width=200, tiled=False)
    blob = src.read_bytes()
    src.write_bytes(blob[: len(blob) // 3])
    with pytest.raises(FileReadError, match="corrupt"):
        io.read(src)


def test_integer_output_is_rounded_and_clipped(tmp_path, geotiff_path):
    img = io.read(geotiff_path)
    values = np.full((3, 40, 36), 50.0, np.float32)
    values[:, 10, 10:13] = [300.7, -3.0, 12.6]
    meta = img.meta.replace(dtype="uint8", nodata=None)
    back = io.read(io.write(Image(values, meta), tmp_path / "clip.tif"))
    assert back.data.dtype == np.uint8
    np.testing.assert_array_equal(back.data[0, 10, 10:13], [255, 0, 13])


def test_masked_pixels_get_nodata_and_valid_ones_stay_valid(tmp_path, geotiff_path):
    img = io.read(geotiff_path)
    data = img.data.astype(np.float32)
    data[:, 20, 20] = 0.2  # valid, but rounds to the nodata value 0
    data[:, ~img.mask] = 777  # garbage under the mask
    back = io.read(io.write(img.replace(data=data), tmp_path / "masked.tif"))
    np.testing.assert_array_equal(back.mask, img.mask)
    assert (back.data[:, ~img.mask] == 0).all() and (back.data[:, 20, 20] == 1).all()


def test_zoom_fov_keeps_bounds(tmp_path, geotiff_path):
    img = io.read(geotiff_path)
    meta = img.meta.zoom(2, convention="fov")
    zoomed = Image(img.data.repeat(2, axis=1).repeat(2, axis=2), meta, img.mask.repeat(2, 0).repeat(2, 1))
    out = io.write(zoomed, tmp_path / "x2.tif")
    with rasterio.open(geotiff_path) as src, rasterio.open(out) as dst:
        assert (dst.height, dst.width) == (80, 72)
        assert dst.bounds == src.bounds
        assert dst.transform.almost_equals(src.transform @ Affine.scale(1 / 2), precision=1e-9)
        assert dst.descriptions == src.descriptions and dst.crs == src.crs


def test_cropped_image_gets_its_own_geometry(tmp_path, geotiff_path):
    part = io.read(geotiff_path, window=((8, 24), (4, 20)))
    out = io.write(part, tmp_path / "crop.tif")
    with rasterio.open(geotiff_path) as src, rasterio.open(out) as dst:
        assert (dst.height, dst.width) == (16, 16)
        assert dst.transform == src.window_transform(rasterio.windows.Window(4, 8, 16, 16))


def test_provenance_in_a_dataset_tag(tmp_path, geotiff_path):
    img = io.read(geotiff_path)
    out = io.write(img.replace(meta=img.meta.with_provenance(model="srae", scale=2)), tmp_path / "p.tif")
    with rasterio.open(out) as dst:
        assert '"model": "srae"' in dst.tags()["AESR_SCI_PROVENANCE"]
    prov = io.read(out).meta.provenance
    assert prov["model"] == "srae" and prov["scale"] == 2 and "aesr_sci_version" in prov


def test_cog_output(tmp_path, make_geotiff):
    src = make_geotiff(tmp_path / "big.tif", bands=2, height=600, width=560, dtype="uint8")
    img = io.read(src)
    out = io.write(img, tmp_path / "cog.tif", cog=True, compress="zstd")
    with rasterio.open(out) as dst:
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dst.overviews(1) and dst.profile["tiled"] and dst.compression.name == "zstd"
        assert dst.descriptions == ("B1", "B2") and "AESR_SCI_PROVENANCE" in dst.tags()
    back = io.read(out)
    np.testing.assert_array_equal(back.data, img.data)
    np.testing.assert_array_equal(back.mask, img.mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif", "cog.tif"]


def test_streaming_writer_matches_write(tmp_path, geotiff_path):
    img = io.read(geotiff_path)
    io.write(img, tmp_path / "whole.tif")
    with io.create_geotiff(tmp_path / "blocks.tif", img.meta, img.data.shape) as dst:
        for r0, r1 in [(0, 16), (16, 40)]:
            for c0, c1 in [(0, 20), (20, 36)]:
                dst.write(img.data[:, r0:r1, c0:c1], ((r0, r1), (c0, c1)), mask=img.mask[r0:r1, c0:c1])
    _same_file_content(tmp_path / "whole.tif", tmp_path / "blocks.tif")


def test_streaming_writer_internal_mask_added_late(tmp_path, make_geotiff):
    valid = np.ones((40, 36), bool)
    valid[30:, :] = False
    img = io.read(make_geotiff(tmp_path / "m.tif", nodata=None, internal_mask=valid))
    with io.create_geotiff(tmp_path / "s.tif", img.meta, img.data.shape) as dst:
        dst.write(img.data[:, :20], ((0, 20), (0, 36)))  # no mask yet: all valid
        dst.write(img.data[:, 20:], ((20, 40), (0, 36)), mask=valid[20:])
    np.testing.assert_array_equal(io.read(tmp_path / "s.tif").mask, valid)


def test_streaming_writer_is_atomic(tmp_path, geotiff_path):
    img = io.read(geotiff_path)
    out = tmp_path / "out"
    out.mkdir()
    with (
        pytest.raises(RuntimeError, match="stop"),
        io.create_geotiff(out / "s.tif", img.meta, img.data.shape) as dst,
    ):
        dst.write(img.data[:, :8], ((0, 8), (0, 36)))
        raise RuntimeError("stop")
    assert list(out.iterdir()) == []
    with (
        pytest.raises(DataError, match="does not fit window"),
        io.create_geotiff(out / "s.tif", img.meta, img.data.shape) as dst,
    ):
        dst.write(img.data[:, :8], ((0, 9), (0, 36)))
    assert list(out.iterdir()) == []


def test_existing_output_is_kept(tmp_path, geotiff_path):
    out = tmp_path / "o.tif"
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        io.write(io.read(geotiff_path), out)
    assert out.read_bytes() == b"old"


def test_three_d_image_cannot_be_a_geotiff(tmp_path, nifti_path):
    with pytest.raises(DataError, match="2D"):
        io.write(io.read(nifti_path), tmp_path / "vol.tif")


def test_info_geotiff(geotiff_path):
    result = io.info(geotiff_path)
    assert result["crs"]["epsg"] == 32618 and "UTM zone 18N" in result["crs"]["name"]
    assert result["shape"] == [3, 40, 36] and result["nodata"] == 0
    assert result["bounds"]["left"] == 585000.0 and result["bounds"]["top"] == 4415000.0
    assert result["corners"]["lower_right"] == [585000.0 + 36 * 20, 4415000.0 - 40 * 20]
    text = io.format_info(result)
    assert "EPSG:32618" in text and "B3" in text


def test_colour_metadata_that_cannot_be_written_is_warned_once(tmp_path, geotiff_path, caplog):
    """A colour interpretation or colour map that GDAL refuses is left out with one warning, not silently."""
    import logging

    img = io.read(geotiff_path)
    extra = {
        **img.meta.extra,
        "colorinterp": ["gray", "no_such_colour", "blue"],
        "colormap": {0: "not a colour"},
    }
    bad = img.replace(meta=img.meta.replace(extra=extra))
    with caplog.at_level(logging.WARNING, logger="aesr_sci.io.geotiff"):
        io.write(bad, tmp_path / "a.tif")
        io.write(bad, tmp_path / "b.tif")
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "colour interpretation" in m]) == 1, messages
    assert len([m for m in messages if "colour map" in m]) == 1, messages
    assert all(str(tmp_path / "a.tif") in m for m in messages)
    np.testing.assert_array_equal(io.read(tmp_path / "b.tif").data, img.data)


def _rgb_with_scattered_nodata():
    data = np.full((3, 40, 36), 100, np.uint16)
    data[0, 20, 20] = 0  # nodata in band 1 only
    data[1, 5:10, 5:10] = 0  # a block missing in band 2 only
    return data


def test_per_band_nodata_follows_gdal(tmp_path, make_geotiff):
    """A pixel equal to nodata in one band is missing in that band only (GDAL's per-band masks)."""
    src = make_geotiff(tmp_path / "a.tif", data=_rgb_with_scattered_nodata(), nodata=0, nodata_border=0)
    img = io.read(src)
    with rasterio.open(src) as ds:
        np.testing.assert_array_equal(img.mask, ds.read_masks() > 0)
    assert img.mask.shape == (3, 40, 36) and not img.mask[0, 20, 20] and img.mask[1:, 20, 20].all()
    assert img.common_mask.shape == (40, 36) and not img.common_mask[20, 20]
    io.write(img, tmp_path / "b.tif")
    back = io.read(tmp_path / "b.tif")
    np.testing.assert_array_equal(back.data, img.data)
    np.testing.assert_array_equal(back.mask, img.mask)


def test_degrade_keeps_other_bands_of_a_pixel_missing_in_one(tmp_path, make_geotiff):
    from aesr_sci.data.degrade import degrade

    src = make_geotiff(tmp_path / "a.tif", data=_rgb_with_scattered_nodata(), nodata=0, nodata_border=0)
    lq = degrade(io.read(src), scale=2, method="area")
    io.write(lq, tmp_path / "lq.tif")
    back = io.read(tmp_path / "lq.tif")
    missing = (~back.mask).sum(axis=(1, 2)) if back.mask.ndim == 3 else None
    assert missing is not None and list(missing) == [1, 9, 0]  # band 3 loses nothing
    assert (back.data[2] == 100).all()


def test_all_nodata_raster_stays_all_nodata(tmp_path, make_geotiff):
    from aesr_sci.data.degrade import degrade

    src = make_geotiff(tmp_path / "z.tif", bands=2, height=16, width=16, data=np.zeros((2, 16, 16)), nodata=0)
    lq = degrade(io.read(src), scale=2, method="area")
    io.write(lq, tmp_path / "lq.tif")
    back = io.read(tmp_path / "lq.tif")
    assert not back.mask.any() and (back.data == 0).all()


def test_alpha_band_is_a_dataset_mask(tmp_path):
    profile = {
        "driver": "GTiff",
        "width": 16,
        "height": 16,
        "count": 4,
        "dtype": "uint8",
        "photometric": "RGB",
    }
    profile.update(crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 4000000))
    data = np.full((4, 16, 16), 50, np.uint8)
    data[3] = 255
    data[3, :4] = 0
    with rasterio.open(tmp_path / "a.tif", "w", alpha="YES", **profile) as dst:
        dst.write(data)
    img = io.read(tmp_path / "a.tif")
    assert img.mask.shape == (16, 16) and not img.mask[:4].any() and img.mask[4:].all()


def test_stale_statistics_are_dropped(tmp_path, make_geotiff):
    src = make_geotiff(
        tmp_path / "a.tif",
        bands=1,
        tags={"STATISTICS_MEAN": "3", "KEEP": "yes"},
        band_tags=[{"STATISTICS_MAXIMUM": "9", "STATISTICS_MINIMUM": "1", "WAVELENGTH": "665"}],
    )
    io.write(io.read(src), tmp_path / "b.tif")
    with rasterio.open(tmp_path / "b.tif") as ds:
        assert ds.tags()["KEEP"] == "yes" and not any(k.startswith("STATISTICS_") for k in ds.tags())
        assert ds.tags(1) == {"WAVELENGTH": "665"}


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("transform", [Affine(20.0, 0.0, 585000.0, 0.0, -20.0, 4415000.0), ROTATED, SOUTH_UP])
def test_output_transform_is_exact(tmp_path, make_geotiff, scale, transform):
    """Zooming by s gives exactly src.transform @ Affine.scale(1 / s): no 1e-10 m drift."""
    src = make_geotiff(tmp_path / "a.tif", bands=1, height=24, width=24, transform=transform)
    img = io.read(src)
    lq = Image(img.data[:, ::scale, ::scale], img.meta.zoom(1 / scale, convention="fov"))
    io.write(lq, tmp_path / "lq.tif")
    up = img.meta.zoom(scale, convention="fov")
    data = np.repeat(np.repeat(img.data, scale, axis=1), scale, axis=2)
    io.write(Image(data, up), tmp_path / "hr.tif")
    with (
        rasterio.open(src) as s,
        rasterio.open(tmp_path / "lq.tif") as lq,
        rasterio.open(tmp_path / "hr.tif") as hr,
    ):
        assert lq.transform == s.transform @ Affine.scale(scale)
        assert hr.transform == s.transform @ Affine.scale(1 / scale)


def test_cog_writes_no_gdal_warning(tmp_path, geotiff_path, caplog):
    caplog.set_level("WARNING")
    io.write(io.read(geotiff_path), tmp_path / "c.tif", cog=True)
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")], caplog.text
