"""The API takes users' objects (numpy + affine, nibabel, rasterio, xarray) and gives back the same kind."""

from __future__ import annotations

import gc
import types
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from conftest import OBLIQUE_AFFINE, write_geotiff
from test_infer import stand_in

import aesr_sci
from aesr_sci.errors import ParameterError
from aesr_sci.spatial import Image, zoom_affine

RASTER_MODEL = stand_in((2, 2))
VOLUME_MODEL = stand_in((2, 2, 2))


def _doubled(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    for ax in axes:
        a = a.repeat(2, axis=ax)
    return a


def test_numpy_volume_gives_back_an_array_and_its_affine() -> None:
    arr = np.random.default_rng(0).random((6, 8, 4)).astype(np.float32)
    out, affine = aesr_sci.upscale(arr, VOLUME_MODEL, affine=OBLIQUE_AFFINE, progress=False)
    assert isinstance(out, np.ndarray) and out.shape == (12, 16, 8)
    np.testing.assert_allclose(out, _doubled(arr, (0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(affine, zoom_affine(OBLIQUE_AFFINE, 2, convention="fov"))
    four_d, _ = aesr_sci.upscale(arr[np.newaxis].repeat(2, 0), VOLUME_MODEL, affine=OBLIQUE_AFFINE)
    assert four_d.shape == (2, 12, 16, 8)  # channel first in, channel first out


def test_numpy_raster_takes_a_transform_and_gives_one_back() -> None:
    arr = (np.arange(3 * 8 * 6).reshape(3, 8, 6) + 1).astype(np.uint16)
    arr[:, 0, :] = 0
    t = Affine(20.0, 0.0, 500000.0, 0.0, -20.0, 4e6)
    out, transform = aesr_sci.upscale(arr, RASTER_MODEL, affine=t, crs="EPSG:32633", nodata=0)
    assert transform == t * Affine.scale(0.5)
    assert out.shape == (3, 16, 12)
    assert (out[:, :2, :] == 0).all()  # declared fill stays fill
    np.testing.assert_allclose(out[:, 2:, :], _doubled(arr, (1, 2))[:, 2:, :], rtol=1e-6)


def test_numpy_without_affine_fails_in_one_line() -> None:
    with pytest.raises(ParameterError, match=r"pass affine=") as err:
        aesr_sci.upscale(np.zeros((4, 4, 4), np.float32), VOLUME_MODEL)
    assert "\n" not in str(err.value)
    with pytest.raises(ParameterError, match="4x4 matrix or a raster's rasterio Affine"):
        aesr_sci.upscale(np.zeros((4, 4), np.float32), RASTER_MODEL, affine=np.eye(3))
    with pytest.raises(ParameterError, match=r"cannot read a builtins\.list"):
        aesr_sci.upscale([[1, 2], [3, 4]], RASTER_MODEL)


def test_nibabel_image_keeps_its_class_and_header_codes() -> None:
    nib = pytest.importorskip("nibabel")
    arr = np.random.default_rng(1).random((6, 8, 4, 2)).astype(np.float32)
    img = nib.Nifti2Image(arr, OBLIQUE_AFFINE)
    img.set_sform(OBLIQUE_AFFINE, code=4)
    img.set_qform(OBLIQUE_AFFINE, code=1)
    img.header.set_xyzt_units("mm", "msec")
    img.header["pixdim"][4] = 2300.0  # repetition time
    out = aesr_sci.upscale(img, VOLUME_MODEL)
    assert type(out) is nib.Nifti2Image and out.shape == (12, 16, 8, 2)
    assert int(out.header["sform_code"]) == 4 and int(out.header["qform_code"]) == 1
    assert out.header.get_xyzt_units() == ("mm", "msec")
    assert float(out.header["pixdim"][4]) == 2300.0
    np.testing.assert_allclose(out.affine, zoom_affine(OBLIQUE_AFFINE, 2, convention="fov"), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.dataobj)[..., 1], _doubled(arr[..., 1], (0, 1, 2)), rtol=1e-6)


def test_rasterio_dataset_in_memory_dataset_out(tmp_path: Path) -> None:
    import rasterio

    path = write_geotiff(
        tmp_path / "s.tif", bands=4, height=16, width=12, band_names=["B1", "B2", "B3", "B4"]
    )
    with rasterio.open(path) as src:
        out = aesr_sci.upscale(src, RASTER_MODEL, bands="B4,2")
        expected = _doubled(src.read([4, 2]), (1, 2))
        transform, crs = src.transform, src.crs
    gc.collect()  # the in-memory file must live as long as the dataset
    with out:
        assert out.count == 2 and out.descriptions == ("B4", "B2")
        assert out.transform == transform * Affine.scale(0.5) and out.crs == crs
        assert out.nodata == 0 and out.dtypes[0] == "uint16"
        np.testing.assert_array_equal(out.read(), expected)  # nodata collar included: 0 stays 0
    closed = rasterio.open(path)
    closed.close()
    with pytest.raises(ParameterError, match="closed"):
        aesr_sci.upscale(closed, RASTER_MODEL)


def test_xarray_dataarray_in_and_out(tmp_path: Path) -> None:
    rioxarray = pytest.importorskip("rioxarray")
    path = write_geotiff(tmp_path / "s.tif", bands=2, height=16, width=12, dtype="float32", nodata=-9999)
    da = rioxarray.open_rasterio(path)
    out = aesr_sci.upscale(da, RASTER_MODEL)
    assert out.dims == da.dims and out.shape == (2, 32, 24)
    assert out.rio.transform() == da.rio.transform() * Affine.scale(0.5)
    assert out.rio.crs == da.rio.crs and out.rio.nodata == -9999
    assert out.attrs["long_name"] == ("B1", "B2")
    np.testing.assert_allclose(out.values, _doubled(da.values, (1, 2)), rtol=1e-6)
    np.testing.assert_allclose(out.x.values[:2], da.x.values[0] + np.array([-5.0, 5.0]))
    masked = rioxarray.open_rasterio(path, masked=True)  # nodata as NaN: stays NaN, never spreads
    out = aesr_sci.upscale(masked.sel(band=1), RASTER_MODEL)
    assert (
        out.dims == ("y", "x")
        and np.isnan(out.values[:8]).all()
        and not np.isnan(out.values[8:-8, 8:-8]).any()
    )


def test_image_and_path_still_give_an_image(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "s.tif", bands=1, height=8, width=8)
    assert isinstance(aesr_sci.upscale(path, RASTER_MODEL), Image)
    assert isinstance(aesr_sci.upscale(aesr_sci.read(path), RASTER_MODEL), Image)


def test_degrade_gives_back_the_kind_it_was_given() -> None:
    nib = pytest.importorskip("nibabel")
    img = nib.Nifti1Image(np.random.default_rng(3).random((8, 8, 6)).astype(np.float32), OBLIQUE_AFFINE)
    img.set_sform(OBLIQUE_AFFINE, code=3)
    low = aesr_sci.degrade(img, scale=2, method="kspace")
    assert type(low) is nib.Nifti1Image and low.shape == (4, 4, 3) and int(low.header["sform_code"]) == 3
    np.testing.assert_allclose(low.affine, zoom_affine(OBLIQUE_AFFINE, 0.5, convention="origin"), atol=1e-5)
    arr, t = aesr_sci.degrade(
        np.ones((8, 8), np.float32),
        scale=2,
        method="area",
        affine=Affine(10, 0, 0, 0, -10, 80),
        crs="EPSG:3857",
    )
    assert arr.shape == (4, 4) and t == Affine(20, 0, 0, 0, -20, 80)


def test_import_of_the_train_module_keeps_train_callable() -> None:
    import aesr_sci.train as engine
    from aesr_sci.errors import RecipeError

    assert aesr_sci.train is engine and isinstance(engine, types.ModuleType)  # the module, for patching
    with pytest.raises(RecipeError, match=r"missing\.yaml: no such recipe file"):
        aesr_sci.train("missing.yaml")  # and a call runs the function
