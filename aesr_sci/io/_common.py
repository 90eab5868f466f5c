"""Helpers shared by the NIfTI and GeoTIFF adapters: format detection, windows, casting, provenance."""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, FileFormatError, FileReadError, ParameterError

__all__ = [
    "NIFTI_SUFFIXES",
    "GEOTIFF_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "PROVENANCE_KEY",
    "detect_format",
    "format_from_suffix",
    "is_gdal_virtual",
    "parse_window",
    "cast_to_dtype",
    "DTYPES",
    "parse_dtype",
    "count_nonfinite",
    "check_finite",
    "check_affine",
    "check_memory",
    "provenance_record",
    "provenance_json",
    "parse_provenance",
    "one_line",
]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
GEOTIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
SUPPORTED_SUFFIXES: tuple[str, ...] = NIFTI_SUFFIXES + GEOTIFF_SUFFIXES
#: rasters that are read (never written) through rasterio: GDAL virtual mosaics
VRT_SUFFIXES: tuple[str, ...] = (".vrt",)
#: key of the provenance record: NIfTI JSON extension member and GeoTIFF dataset tag.
PROVENANCE_KEY = "AESR_SCI_PROVENANCE"

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_MAGICS = (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (library messages sometimes contain newlines)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def is_gdal_virtual(path: str | os.PathLike[str]) -> bool:
    """True for a GDAL virtual file system path (``/vsizip/archive.zip/band.tif``, ``/vsigzip/...``)
    that rasterio opens itself; it names no file of the local file system."""
    return str(path).startswith("/vsi")


def format_from_suffix(path: str | os.PathLike[str], *, reading: bool = False) -> str:
    """``"nifti"`` or ``"geotiff"`` from the file name (case-insensitive).

    With ``reading``, a GDAL virtual mosaic (``.vrt``) is a raster too: it is read through rasterio
    like a GeoTIFF, never written.

    Raises
    ------
    FileFormatError
        If the extension is not one of ``.nii``, ``.nii.gz``, ``.tif``, ``.tiff`` (or ``.vrt``).
    """
    name = Path(path).name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(GEOTIFF_SUFFIXES) or (reading and name.endswith(VRT_SUFFIXES)):
        return "geotiff"
    if name.endswith(VRT_SUFFIXES):
        raise FileFormatError(f"{path}: a .vrt is read, never written: give a .tif output")
    raise FileFormatError(
        f"{path}: unsupported file type; supported extensions are {', '.join(SUPPORTED_SUFFIXES)} "
        "(NIfTI volumes and GeoTIFF rasters; .vrt mosaics as inputs)"
    )


def _sniff(path: Path) -> str | None:
    """The format that the file's first bytes show, or None when they match neither."""
    with open(path, "rb") as f:
        head = f.read(352)
    if head[:4] in _TIFF_MAGICS or head.lstrip()[:11] == b"<VRTDataset":
        return "geotiff"
    if head[:2] == _GZIP_MAGIC:
        try:
            with gzip.open(path, "rb") as g:
                head = g.read(352)
        except (OSError, EOFError, zlib.error) as exc:
            raise FileReadError(
                f"{path}: the gzip stream is corrupt ({one_line(exc)}); the file may be truncated"
            ) from None
    if len(head) >= 348 and (head[344:348] in _NIFTI_MAGICS or head[4:8] in _NIFTI_MAGICS):
        return "nifti"
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """Check that ``path`` exists and return its format, from its extension confirmed by its magic bytes.

    A file whose content is of the other supported format (a TIFF named ``.nii``) is read as what
    it is, with a warning in the log. A ``.vrt`` mosaic is a raster; a GDAL virtual path
    (``/vsizip/archive.zip/band.tif``) is a raster whose existence rasterio checks when it opens it.

    Raises
    ------
    FileReadError
        If the file is missing, is a directory, or cannot be read.
    FileFormatError
        If the extension is unsupported or the content is neither NIfTI nor TIFF.
    """
    from ..fileutil import check_regular_file

    if is_gdal_virtual(path):
        return "geotiff"
    path = Path(path)
    if not path.exists():
        raise FileReadError(f"{path}: no such file")
    check_regular_file(path)
    expected = format_from_suffix(path, reading=True)
    try:
        found = _sniff(path)
    except PermissionError:
        raise FileReadError(f"{path}: permission denied") from None
    except OSError as exc:
        if isinstance(exc, FileReadError):
            raise
        raise FileReadError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if found is None:
        kind = "NIfTI" if expected == "nifti" else "TIFF"
        size = path.stat().st_size
        raise FileFormatError(
            f"{path} is not a {kind} file ({size} bytes, no {kind} signature in its first bytes): "
            "check that it was copied completely and has the right extension"
        )
    if found != expected:
        logger.warning(
            "%s has a %s extension but contains %s data; reading it as %s", path, expected, found, found
        )
    return found


def check_affine(affine: np.ndarray, path: str | os.PathLike[str], fix: str) -> None:
    """Refuse an index-to-world matrix that holds NaN or Inf or cannot be inverted (``fix``: how
    to repair the file's geometry)."""
    m = np.asarray(affine, dtype=np.float64)
    d = m.shape[0] - 1
    finite = bool(np.all(np.isfinite(m)))
    if finite:
        zooms = np.linalg.norm(m[:d, :d], axis=0)
        det = abs(float(np.linalg.det(m[:d, :d])))
    if not finite or not np.all(zooms > 0) or det <= 1e-12 * float(np.prod(zooms)):
        what = (
            "NaN or Inf values" if not finite else "a singular matrix (a zero voxel size or collinear axes)"
        )
        raise FileFormatError(f"{path}: its geometry (affine) holds {what}; {fix}")


def available_memory() -> int:
    """Bytes of memory available to this process (physical memory when the OS does not say)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_memory(shape: Sequence[int], path: str | os.PathLike[str], *, itemsize: int = 4) -> None:
    """Refuse, before allocating, to read an image whose ``shape`` needs more than the memory
    available (float32 working copies: ``itemsize`` 4), naming the file and the sizes."""
    need = int(np.prod([int(n) for n in shape], dtype=np.float64)) * itemsize
    avail = available_memory()
    if need > avail:
        raise DataError(
            f"{path}: its header claims a {' x '.join(map(str, shape))} image ({need / 2**30:.3g} GiB in "
            f"memory), more than the {avail / 2**30:.3g} GiB available: check the header's dimensions, "
            "or read it in windows (read(path, window=...))"
        )


def parse_window(
    window: Sequence[Sequence[int]] | None, shape: Sequence[int]
) -> tuple[tuple[int, int], ...] | None:
    """Validate ``window`` (``(start, stop)`` per spatial axis) against the spatial ``shape``.

    Raises
    ------
    DataError
        If the axis count differs from the shape's or a range is empty or outside the image.
    """
    if window is None:
        return None
    try:
        pairs = tuple((int(a), int(b)) for a, b in window)
    except (TypeError, ValueError):
        raise DataError(f"window must be one (start, stop) pair per spatial axis, got {window!r}") from None
    if len(pairs) != len(shape):
        raise DataError(
            f"window has {len(pairs)} (start, stop) pairs but the image has {len(shape)} spatial axes "
            f"(shape {tuple(shape)})"
        )
    for axis, ((a, b), n) in enumerate(zip(pairs, shape)):
        if not 0 <= a < b <= n:
            raise DataError(
                f"window {pairs} is outside the image of spatial shape {tuple(shape)} on axis {axis}: "
                f"need 0 <= start < stop <= {n}"
            )
    return pairs


#: output data types that both NIfTI and GeoTIFF store
DTYPES: tuple[str, ...] = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


def parse_dtype(dtype: str | np.dtype | type | None) -> np.dtype | None:
    """``dtype`` as a numpy dtype, checked against :data:`DTYPES`; None stays None.

    Raises
    ------
    ParameterError
        For a name that is not a data type, or one the formats cannot store (complex, bool...).

    Examples
    --------
    >>> parse_dtype("float32")
    dtype('float32')
    """
    if dtype is None:
        return None
    try:
        value = np.dtype(dtype)
    except TypeError:
        value = None
    if value is None or value.name not in DTYPES:
        raise ParameterError(f"--dtype {dtype!r} is not an output data type: use one of {', '.join(DTYPES)}")
    return value


def cast_to_dtype(data: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """Convert ``data`` to ``dtype``; for integer targets round to nearest and clip to the range.

    Values are never wrapped: 300.7 written as uint8 becomes 255, -3 becomes 0, 12.6 becomes 13.

    Raises
    ------
    DataError
        If an integer target is asked for and ``data`` holds NaN or Inf.
    """
    dtype = np.dtype(dtype)
    data = np.asarray(data)
    if data.dtype == dtype:
        return data
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_:
            lo = max(info.min, np.iinfo(data.dtype).min) if data.dtype != np.bool_ else 0
            hi = min(info.max, np.iinfo(data.dtype).max) if data.dtype != np.bool_ else 1
            return np.clip(data, lo, hi).astype(dtype)
        work = np.asarray(data, dtype=np.float64)
        bad = int(np.count_nonzero(~np.isfinite(work)))
        if bad:
            raise DataError(
                f"{bad} NaN or Inf values cannot be written as {dtype}: mask them (they become nodata) "
                "or write a float dtype"
            )
        return np.clip(np.rint(work), info.min, info.max).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        return data.astype(dtype)
    raise DataError(f"cannot write data as {dtype}: use an integer or floating-point dtype")


def count_nonfinite(data: np.ndarray, mask: np.ndarray | None = None) -> int:
    """Number of NaN or Inf values of ``data`` ``(C, *spatial)`` where ``mask`` (``(*spatial)`` or
    per band ``(C, *spatial)``) is True, or anywhere."""
    if not np.issubdtype(data.dtype, np.floating):
        return 0
    bad = ~np.isfinite(data)
    if mask is not None:
        bad &= mask if mask.ndim == data.ndim else mask[np.newaxis]
    return int(np.count_nonzero(bad))


def check_finite(
    data: np.ndarray, mask: np.ndarray | None, path: str | os.PathLike[str], *, raster: bool = True
) -> None:
    """Raise :class:`DataError` if ``data`` holds NaN or Inf in valid pixels.

    The fix the message suggests depends on the format: a raster can mark such pixels as nodata, a
    volume (``raster=False``: NIfTI has no nodata) needs them replaced.
    """
    bad = count_nonfinite(data, mask)
    if bad:
        fix = (
            "set a nodata value that marks them (e.g. gdal_edit.py -a_nodata nan) or replace them"
            if raster
            else "replace them, e.g. with the background value (numpy.nan_to_num)"
        )
        raise DataError(
            f"{path}: {bad} of {data.size} values are NaN or Inf in valid pixels; {fix}, or read "
            "with check_finite=False"
        )


def provenance_record(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance to write: ``provenance`` with the current package version added."""
    from .. import __version__

    record = {"aesr_sci_version": __version__}
    record.update({str(k): v for k, v in provenance.items() if k != "aesr_sci_version"})
    return record


def provenance_json(provenance: Mapping[str, Any]) -> str:
    """JSON text of :func:`provenance_record` (non-JSON values are written with ``str``)."""
    return json.dumps(provenance_record(provenance), sort_keys=True, default=str)


def parse_provenance(text: str | bytes | None) -> dict[str, Any]:
    """Provenance dict from JSON text; an empty dict for missing or malformed text."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        logger.warning("ignoring an unreadable %s record", PROVENANCE_KEY)
        return {}
    if isinstance(value, dict) and PROVENANCE_KEY in value and isinstance(value[PROVENANCE_KEY], dict):
        value = value[PROVENANCE_KEY]
    return value if isinstance(value, dict) else {}
