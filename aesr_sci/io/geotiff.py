"""GeoTIFF rasters (``.tif``, ``.tiff``) as :class:`aesr_sci.spatial.Image`.

The image is ``(bands, rows, cols)``. Its affine maps a ``(row, col)`` pixel-centre index to
``(x, y)`` in the CRS; :func:`transform_to_affine` and :func:`affine_to_transform` convert exactly
from and to rasterio's corner-based ``(col, row)`` transform, rotated and south-up grids included.
Values are returned as stored: band scales and offsets are kept in ``meta.extra`` and written
back, not applied.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ..errors import DataError, FileFormatError, FileReadError, FileWriteError, NoCRSWarning, ParameterError
from ..fileutil import atomic_output
from ..spatial import Image, SpatialMeta
from ._common import (
    PROVENANCE_KEY,
    cast_to_dtype,
    check_affine,
    check_memory,
    is_gdal_virtual,
    one_line,
    parse_provenance,
    parse_window,
    provenance_json,
)
from ._common import check_finite as _check_finite

__all__ = [
    "transform_to_affine",
    "affine_to_transform",
    "read_geotiff",
    "read_geotiff_meta",
    "read_dataset",
    "write_geotiff",
    "create_geotiff",
    "GeoTiffWriter",
    "geotiff_info",
    "band_indexes",
    "nodata_mask",
    "COMPRESSIONS",
]

logger = logging.getLogger(__name__)
_WARNED: set[str] = set()


def _warn_once(path: Any, what: str, exc: Exception) -> None:
    """Log that ``what`` could not be written to ``path``, once per process and kind of failure."""
    reason = f"{type(exc).__name__}: {exc}"
    if f"{what}: {reason}" not in _WARNED:
        _WARNED.add(f"{what}: {reason}")
        logger.warning("%s: the %s could not be written and is left out (%s)", path, what, reason)


#: accepted values of the ``compress`` option
COMPRESSIONS: tuple[str, ...] = ("deflate", "zstd", "lzw", "none")


# ------------------------------------------------------------------------------------- geometry
def transform_to_affine(transform: Any) -> np.ndarray:
    """3x3 ``(row, col)`` pixel-centre affine from a rasterio corner-based ``(col, row)`` transform.

    Examples
    --------
    >>> from affine import Affine
    >>> transform_to_affine(Affine(10.0, 0.0, 100.0, 0.0, -10.0, 200.0))
    array([[  0.,  10., 105.],
           [-10.,   0., 195.],
           [  0.,   0.,   1.]])
    """
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    return np.array(
        [[b, a, c + 0.5 * (a + b)], [e, d, f + 0.5 * (d + e)], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


def affine_to_transform(affine: np.ndarray) -> Any:
    """Inverse of :func:`transform_to_affine`: a rasterio :class:`affine.Affine`."""
    from affine import Affine

    m = np.asarray(affine, dtype=np.float64)
    if m.shape != (3, 3):
        raise DataError(f"a GeoTIFF needs a 3x3 (row, col) affine, got shape {m.shape}")
    b, a = m[0, 0], m[0, 1]
    e, d = m[1, 0], m[1, 1]
    c = m[0, 2] - 0.5 * (a + b)
    f = m[1, 2] - 0.5 * (d + e)
    return Affine(float(a), float(b), float(c), float(d), float(e), float(f))


def _snap(value: float) -> float:
    """``value`` as the nearest fraction of small denominator (1/3, 3/4...) when within 1e-9 of it."""
    from fractions import Fraction

    frac = Fraction(value).limit_denominator(4096)
    return float(frac) if abs(float(frac) - value) < 1e-9 else value


def _transform_for(meta: SpatialMeta) -> Any:
    """The transform to write, computed in one place with affine arithmetic.

    The source's own transform when the affine is unchanged; for a resampled grid the source's
    transform times the change of pixel grid, that change snapped to exact fractions, so an output
    zoomed by ``s`` has exactly ``src.transform * Affine.scale(1 / s)`` (field of view kept) or that
    shifted by a whole fraction of a pixel (origin kept), without the ~1e-10 drift of converting
    through pixel centres.
    """
    from affine import Affine

    stored = meta.extra.get("transform") if meta.format == "geotiff" else None
    if stored is None:
        return affine_to_transform(meta.affine)
    source = Affine(*stored[:6])
    if np.array_equal(transform_to_affine(source), meta.affine):
        return source
    change = ~source @ affine_to_transform(meta.affine)
    return source @ Affine(*(_snap(v) for v in tuple(change)[:6]))


# --------------------------------------------------------------------------------------- reading
def _local(path: str | os.PathLike[str]) -> Any:
    """``path`` as a :class:`Path`, except a GDAL virtual path (``/vsizip//abs/a.zip/b.tif``), kept
    as text: ``Path`` would fold its double slash."""
    return str(path) if is_gdal_virtual(path) else Path(path)


@contextlib.contextmanager
def _quiet_rasterio() -> Iterator[None]:
    """Silence rasterio's NotGeoreferencedWarning (we warn with NoCRSWarning where it matters)."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


@contextlib.contextmanager
def _open(path: Path) -> Iterator[Any]:
    import rasterio
    from rasterio.errors import RasterioError

    with _quiet_rasterio():
        try:
            src = rasterio.open(path)
        except (RasterioError, OSError) as exc:
            if is_gdal_virtual(path):
                raise FileReadError(
                    f"{path}: GDAL cannot open this virtual path ({one_line(exc)}): check the archive's "
                    "path and the file's name inside it (/vsizip//absolute/path/a.zip/inner.tif)"
                ) from None
            raise FileReadError(
                f"{path}: cannot open as a GeoTIFF ({one_line(exc)}); the file may be corrupt"
            ) from None
        with src:
            yield src


def _json_profile(src: Any) -> dict[str, Any]:
    profile = {}
    for key, value in src.profile.items():
        if key in ("crs", "transform"):
            continue
        profile[key] = value.item() if isinstance(value, np.generic) else value
    profile["compress"] = src.compression.name.lower() if src.compression else "none"
    return profile


def _has_mask(src: Any) -> bool:
    from rasterio.enums import MaskFlags

    return any(flags != [MaskFlags.all_valid] for flags in src.mask_flag_enums)


def _read_mask(src: Any, window: Any, indexes: Sequence[int] | None = None) -> np.ndarray | None:
    """Validity as GDAL defines it: ``(rows, cols)`` for an internal (per-dataset) mask or an alpha
    band, or for nodata that marks the same pixels in every band; ``(bands, rows, cols)`` when
    per-band nodata marks different pixels in different bands (a pixel equal to nodata in one band
    is missing in that band only). None when every pixel is valid by construction. ``indexes``:
    the 1-based bands read (default all)."""
    from rasterio.enums import MaskFlags

    if not _has_mask(src):
        return None
    if any(MaskFlags.per_dataset in flags for flags in src.mask_flag_enums):
        return src.dataset_mask(window=window) > 0
    masks = src.read_masks(list(indexes) if indexes else None, window=window) > 0
    return _reduce_mask(masks)


def _reduce_mask(masks: np.ndarray) -> np.ndarray:
    """A per-band mask ``(bands, rows, cols)`` as ``(rows, cols)`` when every band agrees."""
    return masks[0] if bool((masks == masks[:1]).all()) else masks


def band_indexes(
    path: Any, names: Sequence[str], bands: Sequence[int | str] | str | None
) -> list[int] | None:
    """The 1-based indexes of ``bands`` (1-based numbers or band descriptions, in the order given)
    among a raster's bands ``names``; None for every band.

    ``bands`` may be text: ``"5,6,7"`` or ``"B5,B6,B7"``.

    Raises
    ------
    ParameterError
        For an index out of range or a name that no band has, listing the bands there are.

    Examples
    --------
    >>> band_indexes("s2.tif", ["B2", "B3", "B4"], "B4,B3,2")
    [3, 2, 2]
    """
    if bands is None:
        return None
    items = [b.strip() for b in bands.split(",")] if isinstance(bands, str) else list(bands)
    have = ", ".join(f"{i}={n}" if n else str(i) for i, n in enumerate(names, start=1))
    out = []
    for item in items:
        text = str(item).strip()
        if text in names and text:
            out.append(list(names).index(text) + 1)
        elif text.isdigit() and 1 <= int(text) <= len(names):
            out.append(int(text))
        else:
            raise ParameterError(
                f"{path}: no band {text!r}: give 1-based band numbers (1..{len(names)}) or band "
                f"descriptions; its bands are {have}"
            )
    if not out:
        raise ParameterError(f"{path}: no bands selected: give band numbers or descriptions, e.g. 1,2,3")
    return out


def nodata_mask(data: np.ndarray, mask: np.ndarray | None, nodata: float) -> np.ndarray:
    """The mask of ``data`` ``(C, rows, cols)`` once pixels equal to ``nodata`` (NaN: NaN pixels)
    are invalid too; ``(rows, cols)`` when every band agrees."""
    valid = ~np.isnan(data) if math.isnan(nodata) else data != nodata
    if mask is not None:
        valid &= mask if mask.ndim == valid.ndim else mask[np.newaxis]
    return _reduce_mask(valid)


def _refuse_unsupported(path: Path, src: Any) -> None:
    """Refuse complex pixels, and a raster georeferenced only by ground control points (it has no
    grid to resample), before any pixel is read."""
    if src.count and np.dtype(src.dtypes[0]).kind == "c":
        raise FileFormatError(
            f"{path} stores complex values ({src.dtypes[0]}); write the amplitude (or real and "
            "imaginary parts as bands) first, e.g. gdal_calc.py --calc='abs(A)'"
        )
    if src.crs is None and src.transform.is_identity and src.gcps[0]:
        raise FileReadError(
            f"{path} is georeferenced by ground control points only (no geotransform): warp it onto a "
            "grid first, e.g. gdalwarp -r near in.tif gridded.tif"
        )


def _meta(
    path: Path,
    src: Any,
    window: tuple[tuple[int, int], ...] | None,
    *,
    warn: bool = True,
    indexes: Sequence[int] | None = None,
    nodata: float | None = None,
) -> SpatialMeta:
    """The metadata of an open raster, or of its ``window``, for the bands ``indexes`` (1-based;
    None: all) with ``nodata`` overriding the file's."""
    from rasterio.windows import Window

    transform = src.window_transform(Window.from_slices(*window)) if window else src.transform
    crs = _crs_wkt(path, src, warn)
    tags = dict(src.tags())
    provenance = parse_provenance(tags.pop(PROVENANCE_KEY, None))
    extra = _extra(path, src, transform, tags)
    names = tuple(d or "" for d in src.descriptions)
    if indexes is not None:  # the chosen bands, in the chosen order, with their own band metadata
        names = _chosen_bands(extra, names, indexes)
    if nodata is None and src.nodata is not None:
        nodata = float(src.nodata)
    return SpatialMeta(
        affine=transform_to_affine(transform),
        crs=crs,
        nodata=nodata,
        band_names=names,
        dtype=src.dtypes[0],
        format="geotiff",
        extra=extra,
        provenance=provenance,
    )


def _crs_wkt(path: Path, src: Any, warn: bool) -> str | None:
    """The raster's CRS as WKT, or None with a :class:`NoCRSWarning` (when ``warn``)."""
    if src.crs is not None:
        return src.crs.to_wkt()
    if warn:
        warnings.warn(
            f"{path} has no coordinate reference system: outputs will not be georeferenced either",
            NoCRSWarning,
            stacklevel=5,
        )
    return None


def _colormap(src: Any) -> dict[int, tuple[int, ...]] | None:
    """The first band's colour map when it is a palette band (an unreadable one is None)."""
    from rasterio.enums import ColorInterp

    if src.count >= 1 and src.colorinterp[0] == ColorInterp.palette:
        with contextlib.suppress(ValueError):
            return {int(k): tuple(int(c) for c in v) for k, v in src.colormap(1).items()}
    return None


def _extra(path: Path, src: Any, transform: Any, tags: dict[str, str]) -> dict[str, Any]:
    """What the writer restores (``SpatialMeta.extra``): profile, band metadata, tags, colour map."""
    from rasterio.enums import MaskFlags

    return {
        "transform": tuple(float(v) for v in tuple(transform)[:6]),
        "profile": _json_profile(src),
        "source_shape": (src.count, src.height, src.width),
        "colorinterp": [ci.name for ci in src.colorinterp],
        "scales": [float(v) for v in src.scales],
        "offsets": [float(v) for v in src.offsets],
        "units": [u or "" for u in src.units],
        "tags": tags,
        "band_tags": [dict(src.tags(i)) for i in range(1, src.count + 1)],
        "colormap": _colormap(src),
        "per_dataset_mask": any(MaskFlags.per_dataset in flags for flags in src.mask_flag_enums),
        "source_path": str(path),
    }


def _chosen_bands(extra: dict[str, Any], names: tuple[str, ...], indexes: Sequence[int]) -> tuple[str, ...]:
    """Keep in ``extra`` the band metadata of the bands ``indexes`` (1-based), in their order (the
    colour map only for band 1 alone); their names."""
    for key in ("colorinterp", "scales", "offsets", "units", "band_tags"):
        extra[key] = [extra[key][i - 1] for i in indexes]
    if list(indexes) != [1]:
        extra["colormap"] = None
    return tuple(names[i - 1] for i in indexes)


def read_geotiff_meta(
    path: str | os.PathLike[str],
    *,
    bands: Sequence[int | str] | str | None = None,
    nodata: float | None = None,
) -> tuple[SpatialMeta, tuple[int, ...]]:
    """Metadata and ``(bands, rows, cols)`` shape of a GeoTIFF without reading pixels (``bands``
    and ``nodata`` as :func:`read_geotiff`).

    Raises
    ------
    FileReadError
        If the file cannot be opened.
    """
    path = _local(path)
    with _open(path) as src:
        _refuse_unsupported(path, src)
        indexes = band_indexes(path, [d or "" for d in src.descriptions], bands)
        meta = _meta(path, src, None, indexes=indexes, nodata=nodata)
        return meta, (len(indexes) if indexes else src.count, src.height, src.width)


def read_geotiff(
    path: str | os.PathLike[str],
    *,
    window: Any = None,
    check_finite: bool = True,
    bands: Sequence[int | str] | str | None = None,
    nodata: float | None = None,
) -> Image:
    """Read a GeoTIFF (or any raster rasterio opens: a ``.vrt`` mosaic, a ``/vsizip/`` path), or a
    window of it, with its mask.

    Parameters
    ----------
    path
        A ``.tif`` or ``.tiff`` file, any band count and dtype.
    window
        ``((row0, row1), (col0, col1))``: read only these rows and columns; the affine is shifted so
        that index 0 is the window's first pixel.
    check_finite
        Raise :class:`DataError` if valid pixels hold NaN or Inf.
    bands
        Read only these bands, in this order: 1-based numbers or band descriptions (``[5, 6, 7]``,
        ``"B5,B6,B7"``); their names, scales, offsets and units come along.
    nodata
        Fill value that the file does not flag (Landsat's 0): pixels equal to it are invalid, and
        ``meta.nodata`` becomes it, so outputs flag it.

    Returns
    -------
    Image
        ``(bands, rows, cols)`` in the on-disk dtype; ``mask`` (True = valid in every band) when the
        file has a nodata value or an internal mask, else None.

    Raises
    ------
    FileReadError
        A missing, truncated or corrupt file.
    DataError
        NaN or Inf in valid pixels, or a window outside the raster.
    ParameterError
        A band number out of range or a band name the file does not have.

    Warns
    -----
    NoCRSWarning
        When the file has no CRS; reading goes on.
    """
    path = _local(path)
    with _open(path) as src:
        return read_dataset(src, path, window=window, check_finite=check_finite, bands=bands, nodata=nodata)


def read_dataset(
    src: Any,
    path: Any,
    *,
    window: Any = None,
    check_finite: bool = True,
    bands: Sequence[int | str] | str | None = None,
    nodata: float | None = None,
) -> Image:
    """:func:`read_geotiff` of an open rasterio dataset ``src`` (``path`` names it in messages)."""
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    _refuse_unsupported(path, src)
    indexes = band_indexes(path, [d or "" for d in src.descriptions], bands)
    win = parse_window(window, (src.height, src.width))
    count = len(indexes) if indexes else src.count
    check_memory((count, *((b - a for a, b in win) if win else (src.height, src.width))), path)
    check_affine(
        transform_to_affine(src.transform), path, "fix its geotransform (gdal_edit.py -a_ullr or -a_srs)"
    )
    rwin = Window.from_slices(*win) if win else None
    meta = _meta(path, src, win, indexes=indexes, nodata=nodata)
    try:
        data = src.read(indexes, window=rwin)
        mask = _read_mask(src, rwin, indexes)
    except (RasterioError, OSError) as exc:
        raise FileReadError(
            f"{path}: the pixels cannot be read ({one_line(exc)}); the file is truncated or corrupt"
        ) from None
    if nodata is not None:
        mask = nodata_mask(data, mask, float(nodata))
    if check_finite:
        _check_finite(data, mask, path)
    return Image(data, meta, mask)


def read_geotiff_sample(
    path: str | os.PathLike[str],
    *,
    max_values: int,
    bands: Sequence[int | str] | str | None = None,
    nodata: float | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The whole raster decimated (nearest pixel, from overviews when present) to at most
    ``max_values`` values, and its validity mask: a sample to fit statistics for a raster too
    large to read whole. A raster within ``max_values`` is read whole. ``bands`` and ``nodata`` as
    :func:`read_geotiff`."""
    from rasterio.enums import Resampling

    path = _local(path)
    with _open(path) as src:
        indexes = band_indexes(path, [d or "" for d in src.descriptions], bands)
        count = len(indexes) if indexes else src.count
        step = max(1, math.ceil(math.sqrt(count * src.height * src.width / max_values)))
        shape = (count, -(-src.height // step), -(-src.width // step))
        data = src.read(indexes, out_shape=shape, resampling=Resampling.nearest)
        mask = None
        if _has_mask(src):
            masks = src.read_masks(indexes, out_shape=shape, resampling=Resampling.nearest)
            mask = np.all(masks > 0, axis=0)
    if nodata is not None:
        valid = nodata_mask(data, mask, float(nodata))
        mask = valid if valid.ndim == 2 else valid.all(axis=0)
    return data, mask


# --------------------------------------------------------------------------------------- writing
def _nodata_for(nodata: float | None, dtype: np.dtype) -> float | None:
    if nodata is None:
        return None
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if not math.isfinite(nodata) or nodata != int(nodata) or not info.min <= nodata <= info.max:
            raise DataError(
                f"the nodata value {nodata} cannot be stored as {dtype}: write a float dtype "
                "or set another nodata value (meta.replace(nodata=...))"
            )
    return nodata


def _write_problem(exc: BaseException) -> str:
    """What went wrong while writing, with the fix for the common case of a full disk."""
    text = one_line(exc)
    nospace = getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text
    return "the disk is full; free some space or write elsewhere" if nospace else text


def _block_size(height: int, width: int) -> int:
    return 512 if height * width >= 8192 * 8192 else 256


#: tags that describe the input's values and go stale once the pixels change
_STALE_TAGS = ("STATISTICS_", "HISTOGRAM", PROVENANCE_KEY)


def _current_tags(tags: Any) -> dict[str, str]:
    """``tags`` without statistics, histograms and the old provenance (gdalinfo and QGIS would
    stretch the output with the input's values)."""
    return {k: v for k, v in dict(tags or {}).items() if not str(k).upper().startswith(_STALE_TAGS)}


def _creation_profile(
    meta: SpatialMeta, shape: tuple[int, ...], dtype: np.dtype, nodata: float | None, compress: str
) -> dict[str, Any]:
    """The rasterio creation profile of a tiled GeoTIFF of ``(bands, rows, cols)`` ``shape``."""
    count, height, width = shape
    block = _block_size(height, width)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype.name,
        "crs": meta.crs,
        "transform": _transform_for(meta),
        "nodata": nodata,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "BIGTIFF": "IF_SAFER",
        "interleave": "pixel" if count > 1 else "band",
    }
    if compress != "none":
        profile["compress"] = compress
        profile["predictor"] = 3 if np.issubdtype(dtype, np.floating) else 2
    return profile


class GeoTiffWriter:
    """Write a GeoTIFF block by block; the file appears under its name only when complete.

    Use :func:`create_geotiff` to make one. Inside the ``with`` block call :meth:`write` for each
    window; on a clean exit the temporary file is renamed (after conversion to a Cloud-Optimized
    GeoTIFF when ``cog=True``); on an exception it is deleted.

    Attributes
    ----------
    path
        The final output path.
    profile
        The rasterio creation profile.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: SpatialMeta,
        shape: Sequence[int],
        *,
        dtype: str | np.dtype | None = None,
        overwrite: bool = False,
        compress: str = "deflate",
        cog: bool = False,
    ) -> None:
        if meta.spatial_dims != 2:
            raise DataError(
                f"a GeoTIFF needs a 2D (row, col) geometry; this metadata is {meta.spatial_dims}D"
            )
        if len(shape) != 3 or any(int(n) < 1 for n in shape):
            raise DataError(f"shape must be (bands, rows, cols) with positive sizes, got {tuple(shape)}")
        compress = compress.lower()
        if compress not in COMPRESSIONS:
            raise ValueError(f"compress must be one of {', '.join(COMPRESSIONS)} (got {compress!r})")
        self.path = Path(path)
        self.meta = meta
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype or meta.dtype)
        self.overwrite = overwrite
        self.compress = compress
        self.cog = cog
        self.nodata = _nodata_for(meta.nodata, self.dtype)
        self.profile: dict[str, Any] = _creation_profile(meta, self.shape, self.dtype, self.nodata, compress)
        self._stack: contextlib.ExitStack | None = None
        self._dst: Any = None
        self._gtiff: Path | None = None
        self._tmp: Path | None = None
        self._has_mask = False
        self._windows: list[Any] = []

    # -- context manager
    def __enter__(self) -> GeoTiffWriter:
        import rasterio
        from rasterio.errors import RasterioError

        stack = contextlib.ExitStack()
        try:
            self._tmp = stack.enter_context(atomic_output(self.path, overwrite=self.overwrite))
            if self.cog:
                self._gtiff = self._tmp.with_name(self._tmp.name + ".gtiff.tif")
                stack.callback(self._gtiff.unlink, missing_ok=True)
            try:
                with _quiet_rasterio():
                    self._dst = rasterio.open(self._gtiff or self._tmp, "w", **self.profile)
            except (RasterioError, OSError) as exc:
                raise FileWriteError(f"cannot write {self.path}: {one_line(exc)}") from None
            self._set_metadata()
        except BaseException:
            if self._dst is not None:
                self._dst.close()
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        from rasterio.errors import RasterioError

        if self._stack is None:
            return False
        stack, self._stack = self._stack, None
        try:
            try:
                with _quiet_rasterio():
                    self._dst.close()
            except (RasterioError, OSError) as close_exc:
                raise FileWriteError(f"cannot write {self.path}: {_write_problem(close_exc)}") from None
            if exc_type is None and self.cog:
                self._to_cog()
        except BaseException as err:
            stack.__exit__(type(err), err, err.__traceback__)  # deletes the temporary files, re-raises
            raise
        stack.__exit__(exc_type, exc, tb)
        return False

    # -- writing
    def write(
        self, block: np.ndarray, window: Sequence[Sequence[int]], *, mask: np.ndarray | None = None
    ) -> None:
        """Write ``block`` ``(C, h, w)`` at ``window`` ``((row0, row1), (col0, col1))``.

        Values are rounded and clipped for integer outputs. Where ``mask`` (``(h, w)``, True =
        valid) is False the pixels get the nodata value, or, without one, an internal mask marks
        them invalid.
        """
        import rasterio
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        if self._dst is None or self._stack is None:
            raise RuntimeError("use the writer inside a 'with' block")
        win = parse_window(window, self.shape[1:])
        assert win is not None
        (r0, r1), (c0, c1) = win
        block = np.asarray(block)
        if block.shape != (self.shape[0], r1 - r0, c1 - c0):
            raise DataError(
                f"block of shape {block.shape} does not fit window {win} of a {self.shape[0]}-band raster: "
                f"expected {(self.shape[0], r1 - r0, c1 - c0)}"
            )
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape not in (block.shape[1:], block.shape):
                raise DataError(
                    f"mask shape {mask.shape} matches neither {block.shape[1:]} nor {block.shape}"
                )
            if bool(mask.all()):
                mask = None if not self._has_mask else mask
        out = self._prepare(block, mask)
        rwin = Window.from_slices((r0, r1), (c0, c1))
        common = mask if mask is None or mask.ndim == 2 else mask.all(axis=0)
        try:
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
                self._write(out, rwin, common, (r0, r1, c0, c1))
        except (RasterioError, OSError) as exc:
            raise FileWriteError(f"cannot write {self.path}: {_write_problem(exc)}") from None
        self._windows.append(rwin)

    def _write(self, out: np.ndarray, rwin: Any, mask: np.ndarray | None, box: tuple[int, ...]) -> None:
        from rasterio.windows import Window

        r0, r1, c0, c1 = box
        self._dst.write(out, window=rwin)
        if mask is not None and self.nodata is None:
            if not self._has_mask:
                full = Window(0, 0, self.shape[2], self.shape[1])
                self._dst.write_mask(np.zeros((self.shape[1], self.shape[2]), np.uint8), window=full)
                for prev in self._windows:  # blocks written before the mask existed were all valid
                    self._dst.write_mask(
                        np.full((int(prev.height), int(prev.width)), 255, np.uint8), window=prev
                    )
                self._has_mask = True
            self._dst.write_mask(np.where(mask, 255, 0).astype(np.uint8), window=rwin)
        elif self._has_mask:
            self._dst.write_mask(np.full((r1 - r0, c1 - c0), 255, np.uint8), window=rwin)

    def _prepare(self, block: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """Cast ``block`` to the output dtype and mark the pixels where ``mask`` is False."""
        nodata = self.nodata
        if mask is None:
            return cast_to_dtype(block, self.dtype)
        valid = np.broadcast_to(mask, block.shape)  # a (rows, cols) mask holds for every band
        invalid = ~valid
        injected = invalid & ~np.isfinite(block) if block.dtype.kind == "f" else None
        if injected is not None and np.issubdtype(self.dtype, np.integer):
            block = np.where(injected, np.zeros((), block.dtype), block)  # NaN in masked pixels
        out = np.array(cast_to_dtype(block, self.dtype), copy=True)
        if nodata is None:
            if np.issubdtype(self.dtype, np.integer):
                out[invalid] = 0  # hidden by the internal mask; zeros compress well
            return out
        is_nodata = np.isnan(out) if math.isnan(nodata) else out == nodata
        out[invalid] = nodata  # per band, as GDAL reads nodata
        # a valid pixel that rounds to the nodata value would read back as missing: nudge it
        clash = is_nodata & valid
        if clash.any():
            if math.isnan(nodata):
                pass  # NaN in valid pixels is rejected by read(check_finite=True), nothing to nudge
            elif np.issubdtype(self.dtype, np.integer):
                out[clash] = nodata + (1 if nodata < np.iinfo(self.dtype).max else -1)
            else:
                out[clash] = np.nextafter(self.dtype.type(nodata), self.dtype.type(np.inf))
            logger.debug("%s: %d valid values moved off the nodata value", self.path, int(clash.sum()))
        return out

    def _set_metadata(self) -> None:
        from rasterio.enums import ColorInterp

        dst, meta, count = self._dst, self.meta, self.shape[0]
        extra = meta.extra if meta.format == "geotiff" else {}
        for i, name in enumerate(meta.band_names[:count], start=1):
            if name:
                dst.set_band_description(i, name)
        if len(extra.get("scales", ())) == count and any(s != 1 for s in extra["scales"]):
            dst.scales = tuple(extra["scales"])
        if len(extra.get("offsets", ())) == count and any(o != 0 for o in extra["offsets"]):
            dst.offsets = tuple(extra["offsets"])
        if len(extra.get("units", ())) == count and any(extra["units"]):
            dst.units = tuple(extra["units"])
        colorinterp = extra.get("colorinterp", ())
        if len(colorinterp) == count:
            try:
                dst.colorinterp = [ColorInterp[name] for name in colorinterp]
            except Exception as exc:  # the pixels are right without it: say so, do not fail the write
                _warn_once(self.path, f"colour interpretation {list(colorinterp)}", exc)
        if extra.get("colormap") and count >= 1:
            try:
                dst.write_colormap(1, extra["colormap"])
            except Exception as exc:
                _warn_once(self.path, "colour map of band 1", exc)
        tags = _current_tags(extra.get("tags", {}))
        tags[PROVENANCE_KEY] = provenance_json(meta.provenance)
        dst.update_tags(**tags)
        for i, band_tags in enumerate(extra.get("band_tags", ())[:count], start=1):
            if _current_tags(band_tags):
                dst.update_tags(i, **_current_tags(band_tags))

    def _to_cog(self) -> None:
        import rasterio.shutil
        from rasterio.errors import RasterioError

        assert self._gtiff is not None
        options: dict[str, Any] = {
            "driver": "COG",
            "BLOCKSIZE": self.profile["blockxsize"],
            "BIGTIFF": "IF_SAFER",
            "COMPRESS": self.compress.upper() if self.compress != "none" else "NONE",
            "OVERVIEWS": "AUTO",
            "OVERVIEW_RESAMPLING": "NEAREST" if self.meta.extra.get("colormap") else "AVERAGE",
        }
        if self.compress != "none":
            options["PREDICTOR"] = "YES"
        try:
            with _quiet_rasterio():
                rasterio.shutil.copy(self._gtiff, self._tmp, **options)
        except (RasterioError, OSError) as exc:
            raise FileWriteError(
                f"cannot write the Cloud-Optimized GeoTIFF {self.path}: {_write_problem(exc)}"
            ) from None


def create_geotiff(
    path: str | os.PathLike[str],
    meta: SpatialMeta,
    shape: Sequence[int],
    *,
    dtype: str | np.dtype | None = None,
    overwrite: bool = False,
    compress: str = "deflate",
    cog: bool = False,
) -> GeoTiffWriter:
    """Open a streaming GeoTIFF writer for a raster of ``shape`` ``(bands, rows, cols)``.

    The geometry comes from ``meta`` (its affine is the output grid); band names, nodata, tags,
    scales/offsets and provenance are written as :func:`write_geotiff` does.

    Examples
    --------
    >>> with create_geotiff("out.tif", meta, (3, 4096, 4096)) as dst:  # doctest: +SKIP
    ...     dst.write(block, ((0, 512), (0, 512)), mask=valid)
    """
    return GeoTiffWriter(path, meta, shape, dtype=dtype, overwrite=overwrite, compress=compress, cog=cog)


def write_geotiff(
    image: Image,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    cog: bool = False,
    compress: str = "deflate",
    dtype: str | np.dtype | None = None,
) -> Path:
    """Write ``image`` ``(bands, rows, cols)`` as a tiled, compressed GeoTIFF (see :class:`GeoTiffWriter`).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    with create_geotiff(
        path, image.meta, image.data.shape, dtype=dtype, overwrite=overwrite, compress=compress, cog=cog
    ) as dst:
        rows, cols = image.spatial_shape
        dst.write(np.asarray(image.data), ((0, rows), (0, cols)), mask=image.mask)
    return Path(path)


# ------------------------------------------------------------------------------------------ info
def _crs_name(wkt: str) -> str:
    match = re.match(r'\s*\w+\["([^"]+)"', wkt)
    return match.group(1) if match else ""


def _apply(t: Any, col: float, row: float) -> tuple[float, float]:
    """``(x, y)`` of the corner-based ``(col, row)`` position under transform ``t``."""
    return (t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f)


def _corners(t: Any, width: int, height: int) -> dict[str, tuple[float, float]]:
    """World ``(x, y)`` of the four corners and the centre of a ``height`` x ``width`` raster."""
    return {
        "upper_left": _apply(t, 0, 0),
        "lower_left": _apply(t, 0, height),
        "upper_right": _apply(t, width, 0),
        "lower_right": _apply(t, width, height),
        "center": _apply(t, width / 2, height / 2),
    }


def _value_ranges(src: Any, has_mask: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Per band, the lowest and highest finite valid value (inf and -inf for none), and the count of
    non-finite valid values of a floating-point raster, read block by block."""
    nonfinite = 0
    lo = np.full(src.count, np.inf)
    hi = np.full(src.count, -np.inf)
    floating = np.issubdtype(np.dtype(src.dtypes[0]), np.floating)
    for _, win in src.block_windows(1):
        data = src.read(window=win).astype(np.float64)
        valid = np.broadcast_to(_read_mask(src, win), data.shape) if has_mask else True
        finite = np.isfinite(data) & valid
        if floating:
            nonfinite += int(np.count_nonzero(~np.isfinite(data) & valid))
        for b in range(src.count):
            vals = data[b][finite[b]]
            if vals.size:
                lo[b], hi[b] = min(lo[b], vals.min()), max(hi[b], vals.max())
    return lo, hi, nonfinite


def geotiff_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-serialisable summary of a GeoTIFF (see :func:`aesr_sci.io.info`)."""
    path = _local(path)
    with _open(path) as src:
        meta = _meta(path, src, None, warn=False)
        t = src.transform
        corners = _corners(t, src.width, src.height)
        crs = None
        if src.crs is not None:
            epsg = src.crs.to_epsg()
            crs = {"epsg": epsg, "name": _crs_name(meta.crs or ""), "wkt": meta.crs}
        has_mask = _has_mask(src)
        lo, hi, nonfinite = _value_ranges(src, has_mask)
        extra = meta.extra
        return {
            "path": str(path),
            "format": "geotiff",
            "driver": src.driver,
            "shape": [src.count, src.height, src.width],
            "bands": src.count,
            "dtype": meta.dtype,
            "pixel_size": [t.a, t.e]
            if t.b == 0 and t.d == 0
            else [math.hypot(t.a, t.d), math.hypot(t.b, t.e)],
            "transform": list(tuple(t)[:6]),
            "crs": crs,
            "bounds": dict(zip(("left", "bottom", "right", "top"), src.bounds)),
            "corners": {k: list(v) for k, v in corners.items()},
            "nodata": meta.nodata,
            "mask": "internal" if extra["per_dataset_mask"] else ("nodata" if has_mask else None),
            "band_names": list(meta.band_names),
            "colorinterp": extra["colorinterp"],
            "scales": extra["scales"],
            "offsets": extra["offsets"],
            "units": extra["units"],
            "block_size": list(src.block_shapes[0]),
            "compress": extra["profile"]["compress"],
            "overviews": src.overviews(1) if src.count else [],
            "value_range": [[float(a), float(b)] if a <= b else None for a, b in zip(lo, hi)],
            "nonfinite": nonfinite,
            "tags": {k: v for k, v in extra["tags"].items() if len(v) < 200},
            "provenance": dict(meta.provenance),
        }
