"""Rasters as GIS users have them: --bands, --nodata, --dtype, .vrt mosaics and /vsizip/ paths."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from conftest import save_model_dir, write_geotiff

from aesr_sci.cli import main
from aesr_sci.errors import FileFormatError, ParameterError
from aesr_sci.io import read, read_meta, write

NAMES = [f"B{i}" for i in range(1, 14)]


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    """A 13-band Sentinel-2-like stack with band scales, no nodata flag and a fill-0 collar."""
    scales = [1.0 + i / 10 for i in range(13)]
    path = write_geotiff(tmp_path / "stack.tif", bands=13, height=24, width=20, nodata=None, band_names=NAMES)
    with rasterio.open(path, "r+") as dst:
        data = dst.read()
        data[:, :3, :] = 0  # fill the file does not flag
        dst.write(data)
        dst.scales = scales
    return path


def test_bands_by_number_and_name_keep_order_and_metadata(stack: Path) -> None:
    with rasterio.open(stack) as src:
        full = src.read()
    by_name = read(stack, bands="B7,B5,B6")
    by_number = read(stack, bands=[7, 5, 6])
    assert by_name.meta.band_names == ("B7", "B5", "B6") == by_number.meta.band_names
    np.testing.assert_array_equal(by_name.data, full[[6, 4, 5]])
    np.testing.assert_array_equal(by_number.data, by_name.data)
    assert by_name.meta.extra["scales"] == pytest.approx([1.6, 1.4, 1.5])
    window = read(stack, bands="B7,B5", window=((4, 10), (2, 8)))
    np.testing.assert_array_equal(window.data, full[[6, 4], 4:10, 2:8])
    meta, shape = read_meta(stack, bands="2,3")
    assert shape == (2, 24, 20) and meta.band_names == ("B2", "B3")


@pytest.mark.parametrize("bands", ["B14", "0", "14", "NIR", ""])
def test_unknown_bands_fail_in_one_line(stack: Path, bands: str) -> None:
    with pytest.raises(ParameterError) as err:
        read(stack, bands=bands)
    assert str(stack) in str(err.value) and "\n" not in str(err.value)


def test_declared_nodata_masks_fill_and_outputs_flag_it(stack: Path, tmp_path: Path) -> None:
    img = read(stack, nodata=0)
    assert img.meta.nodata == 0 and img.mask is not None
    assert not img.mask[:3].any() and img.mask[3:].all()
    out = write(img, tmp_path / "flagged.tif")
    with rasterio.open(out) as dst:
        assert dst.nodata == 0
        assert (dst.read_masks(1)[:3] == 0).all()


def test_dtype_is_checked_and_applied(stack: Path, tmp_path: Path) -> None:
    img = read(stack, bands="1")
    write(img, tmp_path / "f.tif", dtype="float32")
    with rasterio.open(tmp_path / "f.tif") as dst:
        assert dst.dtypes[0] == "float32"
    with pytest.raises(ParameterError, match="not an output data type"):
        write(img, tmp_path / "g.tif", dtype="complex64")
    with pytest.raises(ParameterError, match="not an output data type"):
        write(img, tmp_path / "g.tif", dtype="floaty")
    assert not (tmp_path / "g.tif").exists()


def test_vrt_and_vsizip_inputs_are_rasters(stack: Path, tmp_path: Path) -> None:
    from rasterio.shutil import copy as gdal_copy

    vrt = tmp_path / "mosaic.vrt"
    gdal_copy(stack, vrt, driver="VRT")
    archive = tmp_path / "scene.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(stack, "inner/stack.tif")
    expected = read(stack, bands="B2")
    for source in (vrt, f"/vsizip/{archive}/inner/stack.tif"):
        img = read(source, bands="B2")
        np.testing.assert_array_equal(img.data, expected.data)
        np.testing.assert_allclose(img.affine, expected.affine)
    with pytest.raises(FileFormatError, match=r"a \.vrt is read, never written"):
        write(expected, tmp_path / "out.vrt")


def test_cli_feeds_a_13_band_stack_to_a_3_band_model(stack: Path, tmp_path: Path) -> None:
    model = save_model_dir(tmp_path, spatial_dims=2, channels=3)
    out = tmp_path / "sr.tif"
    args = ["upscale", str(model), str(stack), str(out), "--bands", "B4,B3,B2", "--nodata", "0"]
    result = CliRunner().invoke(main, [*args, "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as dst:
        assert dst.count == 3 and dst.descriptions == ("B4", "B3", "B2")
        assert dst.dtypes[0] == "float32" and dst.nodata == 0
        assert (dst.read_masks(1)[:6] == 0).all() and (dst.read_masks(1)[6:] == 255).all()
    result = CliRunner().invoke(main, [*args[:-4], str(tmp_path / "x.tif"), "--bands", "B4,B3,B99"])
    assert result.exit_code == 2 and "no band 'B99'" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(
        main, [*args[:-4], str(tmp_path / "x.tif"), "--bands", "2,3,4", "--dtype", "f16x"]
    )
    assert result.exit_code == 2 and "not an output data type" in result.output
    assert not (tmp_path / "x.tif").exists()


def test_cli_degrade_and_vsizip_upscale(stack: Path, tmp_path: Path) -> None:
    low = tmp_path / "low.tif"
    result = CliRunner().invoke(
        main, ["degrade", str(stack), str(low), "--scale", "2", "--bands", "B2,B3", "--dtype", "float32"]
    )
    assert result.exit_code == 0, result.output
    with rasterio.open(low) as dst:
        assert dst.count == 2 and dst.descriptions == ("B2", "B3") and dst.dtypes[0] == "float32"
    archive = tmp_path / "low.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(low, "low.tif")
    model = save_model_dir(tmp_path, spatial_dims=2, channels=1)  # band by band over any band count
    out = tmp_path / "sr.tif"
    result = CliRunner().invoke(main, ["upscale", str(model), f"/vsizip/{archive}/low.tif", str(out)])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as dst:
        assert dst.count == 2 and dst.width == 20 and dst.descriptions == ("B2", "B3")
    result = CliRunner().invoke(main, ["degrade", str(stack), str(tmp_path / "n.nii.gz"), "--scale", "2"])
    assert result.exit_code == 2  # a raster cannot become a NIfTI


def test_nifti_refuses_raster_options(tmp_path: Path) -> None:
    from conftest import write_nifti

    path = write_nifti(tmp_path / "v.nii.gz")
    with pytest.raises(ParameterError, match="bands and nodata apply to rasters"):
        read(path, nodata=0)


def test_cli_evaluate_scores_the_chosen_bands(stack: Path, tmp_path: Path) -> None:
    import json

    model = save_model_dir(tmp_path, spatial_dims=2, channels=3, method="area")
    scores = tmp_path / "scores.json"
    args = ["evaluate", str(model), str(stack), "--json", str(scores), "--bands", "B4,B3,B2", "--nodata", "0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(scores.read_text())["files"]
    assert len(entry["model"]["psnr_per_band"]) == 3
    result = CliRunner().invoke(main, ["evaluate", str(model), str(stack)])
    assert result.exit_code == 2 and "expects 3 band(s) but the input has 13" in result.output


def test_streamed_blocks_honour_bands_and_nodata(stack: Path, tmp_path: Path) -> None:
    from aesr_sci.infer import upscale_files

    model = save_model_dir(tmp_path, spatial_dims=2, channels=3, method="area")
    kw = {"bands": "B4,B3,B2", "nodata": 0}
    (whole,) = upscale_files(model, [stack], tmp_path / "whole.tif", stream=False, **kw)
    (streamed,) = upscale_files(model, [stack], tmp_path / "streamed.tif", stream=True, block=16, **kw)
    a, b = read(whole), read(streamed)
    assert a.meta.band_names == b.meta.band_names == ("B4", "B3", "B2")
    np.testing.assert_array_equal(a.mask, b.mask)
    assert not a.mask[:6].any()
    np.testing.assert_allclose(a.data[:, a.mask], b.data[:, b.mask], rtol=0.05, atol=2)
