"""Reading and writing NIfTI volumes and GeoTIFF rasters as :class:`aesr_sci.spatial.Image`.

This subpackage is the only place that imports nibabel or rasterio. The format is chosen by the
file extension (``.nii``, ``.nii.gz``, ``.tif``, ``.tiff``, any case) and confirmed by the file's
first bytes.

Examples
--------
>>> from aesr_sci import io
>>> img = io.read("t1.nii.gz")  # doctest: +SKIP
>>> img.data.shape, img.meta.spacing  # doctest: +SKIP
((1, 182, 218, 182), (1.0, 1.0, 1.0))
>>> io.write(img, "copy.nii.gz")  # doctest: +SKIP
PosixPath('copy.nii.gz')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..spatial import Image, SpatialMeta
from ._common import SUPPORTED_SUFFIXES, detect_format, format_from_suffix, is_gdal_virtual, parse_dtype
from .objects import from_image, to_image

__all__ = [
    "SUPPORTED_SUFFIXES",
    "read",
    "read_meta",
    "write",
    "create_geotiff",
    "info",
    "format_info",
    "detect_format",
    "parse_dtype",
    "is_gdal_virtual",
    "to_image",
    "from_image",
]


def read(
    path: str | os.PathLike[str],
    *,
    window: Sequence[Sequence[int]] | None = None,
    check_finite: bool = True,
    bands: Sequence[int | str] | str | None = None,
    nodata: float | None = None,
) -> Image:
    """Read a NIfTI volume or a GeoTIFF raster, or a window of it.

    Parameters
    ----------
    path
        ``.nii``/``.nii.gz`` (3D, or 4D read as channels) or ``.tif``/``.tiff``.
    window
        One ``(start, stop)`` pair per spatial axis in array-axis order (``(x, y, z)`` for NIfTI,
        ``(row, col)`` for GeoTIFF). The returned affine is shifted so that index 0 is the start.
    check_finite
        Raise :class:`~aesr_sci.errors.DataError` when valid pixels hold NaN or Inf.
    bands
        Rasters: read only these bands, in this order, by 1-based number or description
        (``[5, 6, 7]``, ``"B5,B6,B7"``); their names come along.
    nodata
        Rasters: a fill value the file does not flag (Landsat's 0); pixels equal to it are invalid
        and outputs flag it.

    Returns
    -------
    Image
        ``(C, X, Y, Z)`` or ``(bands, rows, cols)`` data with its :class:`SpatialMeta` (and, for
        rasters with nodata or an internal mask, ``mask``).

    Raises
    ------
    FileReadError
        Missing, truncated or corrupt file.
    FileFormatError
        Unsupported extension or content (2D or 5D NIfTI, a text file named ``.tif``).
    DataError
        NaN or Inf in valid pixels, or a window outside the image.

    Examples
    --------
    >>> tile = read("scene.tif", window=((0, 256), (512, 768)))  # doctest: +SKIP
    """
    fmt = _input_format(path, bands, nodata)
    if fmt == "nifti":
        from .nifti import read_nifti

        return read_nifti(path, window=window, check_finite=check_finite)
    from .geotiff import read_geotiff

    return read_geotiff(path, window=window, check_finite=check_finite, bands=bands, nodata=nodata)


def _input_format(path: str | os.PathLike[str], bands: Any, nodata: Any) -> str:
    """:func:`detect_format`, refusing the raster-only options for a NIfTI volume."""
    fmt = detect_format(path)
    if fmt == "nifti" and (bands is not None or nodata is not None):
        raise ParameterError(
            f"{path}: bands and nodata apply to rasters; a NIfTI volume has neither: drop --bands/--nodata"
        )
    return fmt


def read_meta(
    path: str | os.PathLike[str],
    *,
    bands: Sequence[int | str] | str | None = None,
    nodata: float | None = None,
) -> tuple[SpatialMeta, tuple[int, ...]]:
    """Metadata and ``(C, *spatial)`` shape of a file, without reading its pixels (``bands`` and
    ``nodata`` as :func:`read`).

    Use it to plan windowed reads of rasters larger than memory.

    Raises
    ------
    FileReadError, FileFormatError
        As :func:`read`.
    """
    fmt = _input_format(path, bands, nodata)
    if fmt == "nifti":
        from .nifti import read_nifti_meta

        return read_nifti_meta(path)
    from .geotiff import read_geotiff_meta

    return read_geotiff_meta(path, bands=bands, nodata=nodata)


def write(
    image: Image,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    cog: bool = False,
    compress: str = "deflate",
    dtype: str | np.dtype | None = None,
) -> Path:
    """Write ``image`` to ``path`` (format by extension), atomically.

    Writes in ``dtype or image.meta.dtype``; integer outputs are rounded and clipped to the
    dtype's range. Pixels where ``image.mask`` is False get the nodata value. The header (NIfTI)
    or profile, band names, tags, scales and offsets (GeoTIFF) of the source are restored where
    they still apply; the geometry always comes from ``image``. ``image.meta.provenance`` plus
    the package version is recorded in the file.

    Parameters
    ----------
    image
        A 3D image for ``.nii``/``.nii.gz``, a 2D image for ``.tif``/``.tiff``.
    path
        Output file; nothing is left there if writing fails.
    overwrite
        Replace an existing file.
    cog
        GeoTIFF only: write a Cloud-Optimized GeoTIFF with overviews.
    compress
        GeoTIFF only: ``"deflate"`` (default), ``"zstd"``, ``"lzw"`` or ``"none"``.
    dtype
        On-disk data type (default: the source's), e.g. ``"float32"`` for reflectance: one of
        :data:`~aesr_sci.io._common.DTYPES`.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    FileWriteError
        The directory is missing or not writable.
    FileFormatError
        Unsupported extension.
    DataError
        The image does not fit the format (a 3D image to GeoTIFF, NaN written as integers...).
    """
    from ..fileutil import check_output

    fmt = format_from_suffix(path)
    dtype = parse_dtype(dtype)
    source = image.meta.extra.get("source_path")  # never write onto the file the image came from
    check_output(path, overwrite=overwrite, inputs=[source] if source else ())
    if fmt == "nifti":
        from .nifti import write_nifti

        return write_nifti(image, path, overwrite=overwrite, dtype=dtype)
    from .geotiff import write_geotiff

    return write_geotiff(image, path, overwrite=overwrite, cog=cog, compress=compress, dtype=dtype)


def create_geotiff(
    path: str | os.PathLike[str],
    meta: SpatialMeta,
    shape: Sequence[int],
    *,
    dtype: str | np.dtype | None = None,
    overwrite: bool = False,
    compress: str = "deflate",
    cog: bool = False,
) -> Any:
    """Open a streaming GeoTIFF writer (see :func:`aesr_sci.io.geotiff.create_geotiff`).

    Examples
    --------
    >>> with create_geotiff("big_x2.tif", meta, (4, 20000, 20000)) as dst:  # doctest: +SKIP
    ...     dst.write(block, ((0, 512), (0, 512)), mask=valid)
    """
    from .geotiff import create_geotiff as _create

    return _create(path, meta, shape, dtype=dtype, overwrite=overwrite, compress=compress, cog=cog)


def info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-serialisable description of a file, like ``gdalinfo`` or ``nib-ls``.

    Keys common to both formats: ``path``, ``format``, ``shape`` ``(C, *spatial)``, ``dtype``,
    ``bounds``, ``nonfinite`` (NaN/Inf count in valid pixels), ``value_range``, ``provenance``.
    NIfTI adds ``voxel_size``, ``orientation`` (e.g. ``"RAS"``), ``affine``, form codes, scaling;
    GeoTIFF adds ``crs`` (``epsg``, ``name``, ``wkt``; None when absent), ``pixel_size``,
    ``corners``, ``nodata``, ``band_names``, ``scales``, ``offsets``, ``compress``, ``overviews``.

    Raises
    ------
    FileReadError, FileFormatError
        As :func:`read`.
    """
    fmt = detect_format(path)
    if fmt == "nifti":
        from .nifti import nifti_info

        return nifti_info(path)
    from .geotiff import geotiff_info

    return geotiff_info(path)


def _fmt(values: Sequence[float], digits: int = 4) -> str:
    return ", ".join(f"{v:.{digits}g}" if isinstance(v, float) else str(v) for v in values)


def format_info(result: dict[str, Any]) -> str:
    """Human-readable text for a dict from :func:`info`."""
    lines = [f"{result['path']}", f"  format:      {result['format']}"]
    lines.append(f"  shape:       {' x '.join(map(str, result['shape']))} (C, *spatial)")
    lines.append(f"  dtype:       {result['dtype']}")
    lines += _nifti_lines(result) if result["format"] == "nifti" else _geotiff_lines(result)
    lines.append(f"  non-finite:  {result['nonfinite']}")
    if result.get("provenance"):
        lines.append("  provenance:  " + ", ".join(f"{k}={v}" for k, v in result["provenance"].items()))
    return "\n".join(lines)


def _nifti_lines(result: dict[str, Any]) -> list[str]:
    """The NIfTI part of :func:`format_info`: voxel size, orientation, bounds, scaling, value range."""
    space = result["units"][0] or "unknown units"
    lines = [f"  voxel size:  {_fmt(result['voxel_size'])} ({space})"]
    lines.append(
        f"  orientation: {result['orientation']} (qform_code {result['qform_code']}, "
        f"sform_code {result['sform_code']})"
    )
    lo, hi = result["bounds"]["min"], result["bounds"]["max"]
    lines.append(f"  bounds:      min ({_fmt(lo, 6)})  max ({_fmt(hi, 6)})")
    if result["scl_slope"] is not None:
        lines.append(f"  scaling:     slope {result['scl_slope']:g}, inter {result['scl_inter']:g}")
    if result["description"]:
        lines.append(f"  description: {result['description']}")
    lines.append(f"  value range: {result['value_range'][0]:g} .. {result['value_range'][1]:g}")
    return lines


def _geotiff_lines(result: dict[str, Any]) -> list[str]:
    """The GeoTIFF part of :func:`format_info`: CRS, pixel size, bounds and corners, nodata, storage,
    then one line per band."""
    crs = result["crs"]
    if crs is None:
        lines = ["  crs:         none (not georeferenced)"]
    else:
        epsg = f"EPSG:{crs['epsg']}" if crs["epsg"] else "no EPSG code"
        lines = [f"  crs:         {epsg} ({crs['name']})"]
    lines.append(f"  pixel size:  {_fmt(result['pixel_size'], 8)}")
    b = result["bounds"]
    lines.append(
        f"  bounds:      left {b['left']:.3f} bottom {b['bottom']:.3f} right {b['right']:.3f} top {b['top']:.3f}"
    )
    for name, (x, y) in result["corners"].items():
        lines.append(f"    {name.replace('_', ' '):<12} ({x:.3f}, {y:.3f})")
    lines.append(
        f"  nodata:      {result['nodata']}" + (f" (mask: {result['mask']})" if result["mask"] else "")
    )
    lines.append(
        f"  compress:    {result['compress']}, blocks {result['block_size']}, overviews {result['overviews']}"
    )
    return lines + [_band_line(result, i, name) for i, name in enumerate(result["band_names"])]


def _band_line(result: dict[str, Any], i: int, name: str) -> str:
    """One band of a GeoTIFF's :func:`info`: name, colour interpretation, scaling, units, range."""
    extras = [result["colorinterp"][i]]
    if result["scales"][i] != 1 or result["offsets"][i] != 0:
        extras.append(f"scale {result['scales'][i]:g} offset {result['offsets'][i]:g}")
    if result["units"][i]:
        extras.append(result["units"][i])
    rng = result["value_range"][i]
    extras.append("no valid pixels" if rng is None else f"range {rng[0]:g}..{rng[1]:g}")
    return f"  band {i + 1}:      {name or '(unnamed)'} [{', '.join(extras)}]"
