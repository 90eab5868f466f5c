"""The boundary between users' in-memory objects and :class:`~aesr_sci.spatial.Image`.

:func:`to_image` converts what a user holds, once, and :func:`from_image` gives a result back as
the same kind; nothing below this module knows these types.

============================  ==========================================  ================================
given                         read as                                     given back
============================  ==========================================  ================================
``Image``, a file path        itself, :func:`aesr_sci.io.read`            an ``Image``
numpy array + ``affine=``     channel-first: ``(X, Y, Z)``/``(C, X, Y,    ``(array, affine)``, the array
                              Z)`` with a 4x4 voxel-to-world matrix;      with the input's axes, the
                              ``(rows, cols)``/``(bands, rows, cols)``    affine of the same kind (4x4
                              with a rasterio ``Affine`` transform        matrix or ``Affine``)
                              (and ``crs=``)
nibabel ``Nifti1Image``/2     ``(X, Y, Z)``, or ``(X, Y, Z, T)`` as T     a nibabel image of the same
                              channels; header kept                       class, header codes kept
rasterio dataset (open)       like a GeoTIFF file                         an open rasterio dataset in
                                                                          memory (``MemoryFile``)
xarray ``DataArray`` with     ``(band, y, x)`` or ``(y, x)``              a ``DataArray`` with the same
rioxarray metadata                                                        dims, ``rio`` transform, CRS
                                                                          and nodata
============================  ==========================================  ================================

Pixels that are invalid in the result (nodata) hold the nodata value in arrays, or NaN when a
float result has none.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..spatial import Image, SpatialMeta

__all__ = ["Kind", "to_image", "from_image"]

_NO_AFFINE = (
    "a numpy array carries no geometry: pass affine= (a volume's 4x4 voxel-to-world matrix, e.g. "
    "nibabel's img.affine, or a raster's rasterio transform, e.g. src.transform, with crs=), or pass "
    "a nibabel image, a rasterio dataset, an xarray DataArray or an aesr_sci.Image"
)


@dataclass(frozen=True)
class Kind:
    """What :func:`to_image` was given, and what :func:`from_image` needs to give the same back."""

    name: str
    """``"image"``, ``"numpy"``, ``"nibabel"``, ``"rasterio"`` or ``"xarray"``."""
    like: Any = None
    """The object given (nibabel and xarray results copy its class, dims and attributes)."""
    info: dict[str, Any] = field(default_factory=dict)


def _is_xarray(obj: Any) -> bool:
    return type(obj).__name__ == "DataArray" and type(obj).__module__.startswith("xarray")


def _is_nibabel(obj: Any) -> bool:
    return type(obj).__module__.startswith("nibabel") and hasattr(obj, "dataobj")


def _is_rasterio(obj: Any) -> bool:
    return type(obj).__module__.startswith("rasterio") and hasattr(obj, "transform") and hasattr(obj, "read")


def to_image(
    obj: Any,
    *,
    affine: Any = None,
    crs: Any = None,
    bands: Any = None,
    nodata: float | None = None,
) -> tuple[Image, Kind]:
    """Convert a user's object into an :class:`Image` and the :class:`Kind` to give back.

    Parameters
    ----------
    obj
        An ``Image``, a file path, a numpy array, a nibabel NIfTI image, an open rasterio dataset
        or an xarray ``DataArray`` with rioxarray metadata (see the module's table).
    affine
        numpy arrays only: a 4x4 voxel-to-world matrix (volume) or a rasterio ``Affine`` (raster).
    crs
        numpy rasters only: anything rasterio's ``CRS.from_user_input`` takes (``"EPSG:32633"``).
    bands, nodata
        Rasters: band selection (1-based numbers or descriptions) and a fill value the data does
        not flag, as in :func:`aesr_sci.io.read`.

    Raises
    ------
    ParameterError
        An array without ``affine``, an affine that fits neither layout, a closed dataset, an
        object of another type, or xarray without rioxarray installed.
    """
    if isinstance(obj, (str, os.PathLike)):
        from . import read

        return read(obj, bands=bands, nodata=nodata), Kind("image")
    if isinstance(obj, Image):
        return _select(obj, bands, nodata), Kind("image")
    if isinstance(obj, np.ndarray):
        return _from_numpy(obj, affine, crs, bands, nodata)
    if _is_nibabel(obj):
        from .nifti import read_nifti_image

        _raster_only(obj, bands, nodata)
        return read_nifti_image(obj, obj.get_filename() or "nibabel image"), Kind("nibabel", like=obj)
    if _is_rasterio(obj):
        from .geotiff import read_dataset

        if obj.closed:
            raise ParameterError(
                f"{obj.name}: the rasterio dataset is closed: pass it inside its 'with' block"
            )
        return read_dataset(obj, obj.name, bands=bands, nodata=nodata), Kind("rasterio", like=obj)
    if _is_xarray(obj):
        return _from_xarray(obj, bands, nodata)
    raise ParameterError(
        f"cannot read a {type(obj).__module__}.{type(obj).__name__}: give a file path, an aesr_sci.Image, "
        "a numpy array with affine=, a nibabel image, a rasterio dataset or an xarray DataArray"
    )


def from_image(image: Image, kind: Kind) -> Any:
    """Give ``image`` back as the kind :func:`to_image` was given (see the module's table)."""
    if kind.name == "numpy":
        data = _filled(image)
        return (data if kind.info["channels"] else data[0]), _affine_back(image.meta, kind.info["raster"])
    if kind.name == "nibabel":
        from .nifti import nifti_image

        out = nifti_image(image)
        return out if type(out) is type(kind.like) else type(kind.like).from_image(out)
    if kind.name == "rasterio":
        return _to_rasterio(image)
    if kind.name == "xarray":
        return _to_xarray(image, kind)
    return image


def _raster_only(obj: Any, bands: Any, nodata: Any) -> None:
    if bands is not None or nodata is not None:
        raise ParameterError(f"bands and nodata apply to rasters; a {type(obj).__name__} has neither")


def _select(image: Image, bands: Any, nodata: float | None) -> Image:
    """``image`` with only ``bands`` and with ``nodata`` declared (an ``Image``'s own options)."""
    from .geotiff import band_indexes, nodata_mask

    if bands is not None:
        names = list(image.meta.band_names) or [""] * image.channels
        idx = [i - 1 for i in band_indexes("image", names, bands) or []]
        mask = (
            image.mask[idx] if image.mask is not None and image.mask.ndim == image.data.ndim else image.mask
        )
        names_out = tuple(names[i] for i in idx) if image.meta.band_names else ()
        image = Image(image.data[idx], image.meta.replace(band_names=names_out), mask)
    if nodata is not None:
        mask = nodata_mask(image.data, image.mask, float(nodata))
        image = Image(image.data, image.meta.replace(nodata=float(nodata)), mask)
    return image


# ------------------------------------------------------------------------------------------ numpy
def _from_numpy(
    arr: np.ndarray, affine: Any, crs: Any, bands: Any, nodata: float | None
) -> tuple[Image, Kind]:
    if affine is None:
        raise ParameterError(_NO_AFFINE)
    raster = type(affine).__name__ == "Affine"
    m = None if raster else np.asarray(affine, dtype=np.float64)
    if not raster and (m is None or m.shape != (4, 4)):
        raise ParameterError(
            f"affine= must be a volume's 4x4 matrix or a raster's rasterio Affine transform (got shape "
            f"{getattr(m, 'shape', '?')}); for a raster pass src.transform or Affine(a, b, c, d, e, f)"
        )
    spatial = 2 if raster else 3
    if arr.ndim not in (spatial, spatial + 1):
        layout = "(rows, cols) or (bands, rows, cols)" if raster else "(X, Y, Z) or (C, X, Y, Z)"
        raise ParameterError(
            f"an array with a {'raster transform' if raster else '4x4 affine'} must be {layout} "
            f"(channel first), got shape {arr.shape}"
        )
    data = arr if arr.ndim == spatial + 1 else arr[np.newaxis]
    if raster:
        from .geotiff import transform_to_affine

        meta = SpatialMeta(transform_to_affine(affine), crs=_wkt(crs), dtype=str(arr.dtype), format="geotiff")
    else:
        meta = SpatialMeta(m, dtype=str(arr.dtype), format="nifti")
    image = _select(Image(data, meta), bands, nodata)
    return image, Kind("numpy", info={"channels": arr.ndim == spatial + 1, "raster": raster})


def _wkt(crs: Any) -> str | None:
    if crs is None:
        return None
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(crs).to_wkt()
    except CRSError as exc:
        raise ParameterError(
            f"crs={crs!r} is not a coordinate reference system ({exc}): give e.g. 'EPSG:32633'"
        ) from None


def _affine_back(meta: SpatialMeta, raster: bool) -> Any:
    if not raster:
        return np.array(meta.affine, dtype=np.float64)
    from .geotiff import affine_to_transform

    return affine_to_transform(meta.affine)


def _filled(image: Image) -> np.ndarray:
    """The data with invalid pixels set to nodata (NaN for a float result without one)."""
    data = np.array(image.data, copy=True)
    if image.mask is None or image.mask.all():
        return data
    fill = image.meta.nodata if image.meta.nodata is not None else np.nan
    if np.isnan(fill) and data.dtype.kind != "f":
        data = data.astype(np.float32)
    valid = np.broadcast_to(
        image.mask if image.mask.ndim == data.ndim else image.mask[np.newaxis], data.shape
    )
    data[~valid] = fill
    return data


# --------------------------------------------------------------------------------------- rasterio
def _to_rasterio(image: Image) -> Any:
    """An open rasterio dataset reading the result from memory (a ``MemoryFile``), written by the
    GeoTIFF writer so that band names, nodata, tags and provenance are those of a file."""
    from rasterio.io import MemoryFile

    from .geotiff import write_geotiff

    with tempfile.TemporaryDirectory(prefix="aesr-sci-") as tmp:
        path = Path(tmp) / "result.tif"
        meta = image.meta.replace(extra={k: v for k, v in image.meta.extra.items() if k != "source_path"})
        write_geotiff(Image(image.data, meta, image.mask), path)
        memfile = MemoryFile(path.read_bytes())
    dataset = memfile.open()
    dataset._aesr_sci_memfile = memfile  # the bytes live as long as the dataset does
    return dataset


# ----------------------------------------------------------------------------------------- xarray
def _from_xarray(da: Any, bands: Any, nodata: float | None) -> tuple[Image, Kind]:
    try:
        import rioxarray  # noqa: F401  (registers the .rio accessor)
    except ImportError:
        raise ParameterError(
            "an xarray DataArray needs rioxarray for its geometry: pip install 'aesr-sci[xarray]'"
        ) from None
    from .geotiff import nodata_mask, transform_to_affine

    dims = tuple(str(d) for d in da.dims)
    if dims not in ((da.rio.y_dim, da.rio.x_dim), ("band", da.rio.y_dim, da.rio.x_dim)):
        raise ParameterError(
            f"an xarray DataArray must have dims (band, y, x) or (y, x), got {dims}: transpose it first"
        )
    data = np.asarray(da.values)
    data = data if data.ndim == 3 else data[np.newaxis]
    names = da.attrs.get("long_name")
    names = tuple(str(n) for n in names) if isinstance(names, (tuple, list)) else ()
    own = da.rio.nodata if da.rio.nodata is not None else da.rio.encoded_nodata
    masked = da.rio.nodata is None and own is not None  # opened with masked=True: NaN marks nodata
    meta = SpatialMeta(
        transform_to_affine(da.rio.transform()),
        crs=None if da.rio.crs is None else da.rio.crs.to_wkt(),
        nodata=None if own is None else float(own),
        band_names=names if len(names) == data.shape[0] else (),
        dtype=str(data.dtype),
        format="geotiff",
    )
    mask = None if own is None else nodata_mask(data, None, np.nan if masked else float(own))
    image = Image(data, meta, mask)
    return _select(image, bands, nodata), Kind("xarray", like=da, info={"dims": dims})


def _to_xarray(image: Image, kind: Kind) -> Any:
    import xarray as xr
    from rioxarray.rioxarray import affine_to_coords

    from .geotiff import affine_to_transform

    transform = affine_to_transform(image.meta.affine)
    rows, cols = image.spatial_shape
    like, dims = kind.like, kind.info["dims"]
    data = _filled(image)
    coords = affine_to_coords(transform, cols, rows, x_dim=like.rio.x_dim, y_dim=like.rio.y_dim)
    if len(dims) == 3:
        coords["band"] = np.arange(1, image.channels + 1)
    else:
        data = data[0]
    attrs = {k: v for k, v in like.attrs.items() if k not in ("long_name", "_FillValue", "scale_factor")}
    if image.meta.band_names and len(dims) == 3:
        attrs["long_name"] = tuple(image.meta.band_names)
    out = xr.DataArray(data, dims=dims, coords=coords, attrs=attrs, name=like.name)
    out = out.rio.write_transform(transform).rio.write_crs(image.meta.crs)
    if image.meta.nodata is not None:
        out = out.rio.write_nodata(image.meta.nodata, encoded=False)
    return out
