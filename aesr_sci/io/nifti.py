"""NIfTI volumes (``.nii``, ``.nii.gz``) as :class:`aesr_sci.spatial.Image`.

A 3D file ``(X, Y, Z)`` becomes a ``(1, X, Y, Z)`` image and a 4D file ``(X, Y, Z, T)`` a
``(T, X, Y, Z)`` image. The affine is kept as stored (never reoriented). ``scl_slope`` and
``scl_inter`` are applied on read (the data is then float32; :attr:`SpatialMeta.dtype` keeps the
on-disk dtype) and restored on write when the values still fit.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, FileFormatError, FileReadError, FileWriteError
from ..fileutil import atomic_output
from ..spatial import Image, SpatialMeta
from ._common import (
    PROVENANCE_KEY,
    cast_to_dtype,
    check_affine,
    check_memory,
    count_nonfinite,
    one_line,
    parse_provenance,
    parse_window,
    provenance_record,
)
from ._common import check_finite as _check_finite

__all__ = ["read_nifti", "read_nifti_image", "read_nifti_meta", "write_nifti", "nifti_image", "nifti_info"]

logger = logging.getLogger(__name__)

_JSON_ECODE = 6  # NIfTI "comment" extension code; we store JSON text in it
_DESCRIP_BYTES = 80
#: header extensions that describe the voxel grid (AFNI, XCEDE, jim dim info, FreeSurfer, CIFTI):
#: dropped when the grid changes, since they would contradict the new one
_GRID_ECODES = frozenset({4, 8, 10, 14, 32})
_READ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError)


def _load(path: Path) -> Any:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(path)
    except (ImageFileError, *_READ_ERRORS) as exc:
        raise FileReadError(
            f"{path}: cannot read the NIfTI header ({one_line(exc)}); the file may be corrupt"
        ) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise FileFormatError(f"{path} is a {type(img).__name__}, not a NIfTI-1 or NIfTI-2 image")
    _check_header(path, img)
    return img


def _check_header(path: Path, img: Any) -> None:
    """Refuse, before any pixel is read, data types and geometries this package cannot handle."""
    dtype = np.dtype(img.get_data_dtype())
    if dtype.fields is not None or dtype.kind == "V":
        raise FileFormatError(
            f"{path} stores colour (RGB) voxels ({dtype}); split the colours into a 4D file of 3 "
            "channels first (e.g. nibabel: numpy.stack([data[c] for c in 'RGB'], -1))"
        )
    if dtype.kind == "c":
        raise FileFormatError(
            f"{path} stores complex values ({dtype}); write the magnitude (numpy.abs) or the real "
            "and imaginary parts as channels of a 4D file first"
        )
    check_affine(
        img.affine, path, "fix pixdim or the qform/sform (e.g. nibabel: img.set_sform(affine, code=2))"
    )


def _shape_info(path: Path, shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """``(X, Y, Z)`` and the channel count for a file of ``shape``; trailing singleton axes dropped."""
    dims = list(shape)
    while len(dims) > 4 and dims[-1] == 1:
        dims.pop()
    if len(dims) == 3:
        return tuple(dims), 1
    if len(dims) == 4:
        return tuple(dims[:3]), dims[3]
    raise FileFormatError(
        f"{path} has {len(shape)} dimensions {tuple(shape)}; only 3D volumes (X, Y, Z) and 4D series "
        "(X, Y, Z, T, read as T channels) are supported"
        + ("; for a 2D slice add a third axis of size 1" if len(dims) < 3 else "")
    )


def _ext_bytes(ext: Any) -> bytes:
    """The raw bytes of a header extension, without decoding it (DICOM, CIFTI, unknown codes)."""
    raw = getattr(ext, "content", None)  # nibabel >= 5.3
    if isinstance(raw, bytes):
        return raw
    return bytes(ext.get_content())


def _nifti_extra(img: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the writer needs (``extra``) and the provenance found in the extensions."""
    hdr = img.header
    provenance: dict[str, Any] = {}
    extensions: list[tuple[int, bytes]] = []
    for ext in hdr.extensions:
        code, content = int(ext.get_code()), _ext_bytes(ext)
        if code == _JSON_ECODE and PROVENANCE_KEY.encode() in content[:64]:
            provenance = parse_provenance(content)
            continue
        extensions.append((code, content))
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    scaled = bool(slope != 1 or inter != 0)
    space, time = hdr.get_xyzt_units()
    intent = hdr.get_intent()
    extra = {
        "nifti_version": 2 if hdr.sizeof_hdr == 540 else 1,
        "nifti_header": bytes(hdr.binaryblock),
        "nifti_extensions": extensions,
        "nifti_affine": np.asarray(img.affine, dtype=np.float64).tolist(),
        "nifti_shape": tuple(int(n) for n in img.shape),
        "scl_slope": float(slope) if scaled else None,
        "scl_inter": float(inter) if scaled else None,
        "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]),
        "xyzt_units": (space, time),
        "intent": (intent[0], [float(p) for p in intent[1]], intent[2]),
        "descrip": hdr["descrip"].item().decode("latin-1").rstrip("\x00"),
        "source_path": str(img.get_filename() or ""),
    }
    return extra, provenance


def _meta(path: Path, img: Any, window: tuple[tuple[int, int], ...] | None) -> SpatialMeta:
    extra, provenance = _nifti_extra(img)
    affine = np.asarray(img.affine, dtype=np.float64)
    if window is not None:
        affine = affine.copy()
        affine[:3, 3] = affine[:3, :3] @ np.array([w[0] for w in window], float) + affine[:3, 3]
    return SpatialMeta(
        affine=affine,
        crs=None,
        nodata=None,
        band_names=(),
        dtype=str(img.get_data_dtype()),
        format="nifti",
        extra=extra,
        provenance=provenance,
    )


def read_nifti_meta(path: str | os.PathLike[str]) -> tuple[SpatialMeta, tuple[int, ...]]:
    """Metadata and ``(C, X, Y, Z)`` shape of a NIfTI file, from its header only.

    Raises
    ------
    FileReadError, FileFormatError
        For a missing, corrupt, 2D or 5D file.
    """
    path = Path(path)
    img = _load(path)
    spatial, channels = _shape_info(path, img.shape)
    return _meta(path, img, None), (channels, *spatial)


def read_nifti(
    path: str | os.PathLike[str],
    *,
    window: Any = None,
    check_finite: bool = True,
) -> Image:
    """Read a NIfTI volume, or a window of it, through nibabel's lazy ``dataobj``.

    Parameters
    ----------
    path
        A ``.nii`` or ``.nii.gz`` file.
    window
        ``((x0, x1), (y0, y1), (z0, z1))``: read only this box; the affine is shifted so that index 0
        is the box's first voxel.
    check_finite
        Raise :class:`DataError` if the data holds NaN or Inf.

    Returns
    -------
    Image
        ``(C, X, Y, Z)`` data; float32 when the file has scaling, else the on-disk dtype.

    Raises
    ------
    FileReadError
        Missing, truncated or corrupt file (also when the damage is only found while reading data).
    FileFormatError
        A 2D or 5D+ file.
    DataError
        NaN or Inf in the data, or a window outside the volume.
    """
    path = Path(path)
    img = _load(path)
    return read_nifti_image(img, path, window=window, check_finite=check_finite)


def read_nifti_image(img: Any, path: Any, *, window: Any = None, check_finite: bool = True) -> Image:
    """:func:`read_nifti` of a nibabel image already loaded or built in memory (``path`` names it in
    messages); its header (form codes, units, repetition time, extensions) is kept for writing."""
    _check_header(path, img)
    spatial, channels = _shape_info(path, img.shape)
    win = parse_window(window, spatial)
    check_memory((channels, *(b - a for a, b in win)) if win else (channels, *spatial), path)
    if img.get_filename():
        _check_size(Path(path), img)
    index: tuple[Any, ...] = tuple(slice(a, b) for a, b in win) if win else (slice(None),) * 3
    if len(img.shape) > 3:
        index = index + (slice(None),) + (0,) * (len(img.shape) - 4)
    proxy = img.dataobj
    scaled = bool(getattr(proxy, "slope", 1) != 1 or getattr(proxy, "inter", 0) != 0)
    try:
        arr = np.asarray(proxy[index])
    except _READ_ERRORS as exc:
        raise FileReadError(
            f"{path}: the image data cannot be read ({type(exc).__name__}: {one_line(exc)}); the file is truncated "
            "or corrupt"
        ) from None
    if scaled and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    arr = arr.reshape((*arr.shape[:3], channels))
    data = np.ascontiguousarray(np.moveaxis(arr, 3, 0))
    if check_finite:
        _check_finite(data, None, path, raster=False)
    return Image(data, _meta(path, img, win))


def _check_size(path: Path, img: Any) -> None:
    """An uncompressed file shorter than its header's dimensions need is truncated: say so before reading."""
    if path.name.lower().endswith(".gz"):
        return
    hdr = img.header
    need = (
        int(hdr.get_data_offset()) + int(np.prod(img.shape, dtype=np.float64)) * img.get_data_dtype().itemsize
    )
    size = path.stat().st_size
    if need > size:
        raise FileReadError(
            f"{path}: its header claims {' x '.join(map(str, img.shape))} voxels ({need} bytes) but the file "
            f"has {size} bytes: it is truncated, or its header's dimensions are wrong"
        )


def _is_rigid(linear: np.ndarray) -> bool:
    """True when the 3x3 matrix has orthogonal columns (representable as a NIfTI qform)."""
    zooms = np.linalg.norm(linear, axis=0)
    if np.any(zooms == 0):
        return False
    rot = linear / zooms
    return bool(np.allclose(rot.T @ rot, np.eye(3), atol=1e-5))


def _set_forms(out: Any, hdr: Any, change: np.ndarray, affine: np.ndarray, ndim: int) -> None:
    """Move qform and sform by the same index-space ``change`` (new = old @ change), each from its
    own geometry: the sform and the qform of a file may differ, and neither may borrow the other's
    voxel size. pixdim[1:4] follow the qform (as the NIfTI standard reads them), pixdim[4:] (the
    repetition time...) are kept."""
    qform, qcode = hdr.get_qform(coded=True)
    sform, scode = hdr.get_sform(coded=True)
    out.set_sform(sform @ change if scode else affine, code=int(scode or 0))
    new_q = qform @ change if qcode else affine
    out.set_qform(new_q, code=int(qcode or 0) if _is_rigid(new_q[:3, :3]) else 0)
    zooms = tuple(np.linalg.norm(new_q[:3, :3], axis=0)) + tuple(hdr.get_zooms()[3:])
    out.header.set_zooms(zooms[:ndim])


def _short_descrip(record: dict[str, Any], original: str) -> str:
    """At most 80 bytes: the original description for a plain copy, else a provenance summary."""
    extras = {k: v for k, v in record.items() if k != "aesr_sci_version"}
    if not extras and original:
        return original[:_DESCRIP_BYTES]
    parts = [f"aesr-sci {record['aesr_sci_version']}"]
    for key in ("model", "scale", "degradation", "method"):
        if key in extras:
            value = extras[key]
            if isinstance(value, dict):  # a degradation record: its method is what a reader needs
                value = value.get("method", "")
            value = "x".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            parts.append(f"{key}={value}")
    text = " ".join(parts)
    return text.encode("ascii", "replace")[:_DESCRIP_BYTES].decode("ascii")


def _file_array(
    arr: np.ndarray, out_dtype: np.dtype, extra: dict[str, Any], hdr: Any, path: Any
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The array to store (file order) and the source's ``(scl_slope, scl_inter)`` when they still fit.

    Integer outputs of a scaled source keep its scaling when the values fit; otherwise nibabel
    chooses new ones (the header's scaling is cleared for it).
    """
    slope, inter = extra.get("scl_slope"), extra.get("scl_inter")
    keep_scaling: tuple[float, float] | None = None
    if np.issubdtype(out_dtype, np.integer) and np.issubdtype(arr.dtype, np.floating) and slope is not None:
        info = np.iinfo(out_dtype)
        with np.errstate(invalid="ignore"):
            raw = np.rint((arr.astype(np.float64) - inter) / slope)
        if count_nonfinite(raw[np.newaxis]) == 0 and raw.min() >= info.min and raw.max() <= info.max:
            arr = raw.astype(out_dtype)
            keep_scaling = (slope, inter)
        else:  # values no longer fit the source scaling: let nibabel choose slope and inter
            if count_nonfinite(arr[np.newaxis]):
                raise DataError(f"NaN or Inf values cannot be written as {out_dtype}: write a float dtype")
            arr = arr.astype(np.float64)
            hdr.set_slope_inter(np.nan, np.nan)
            logger.info("%s: values exceed the source scaling; nibabel chooses scl_slope/scl_inter", path)
    else:
        arr = cast_to_dtype(arr, out_dtype)
        hdr.set_slope_inter(np.nan, np.nan)
    return arr, keep_scaling


def _describe(out: Any, extra: dict[str, Any], provenance: Any, path: Any, *, regridded: bool) -> None:
    """Description, extensions and provenance of the output header.

    The new description is a readable summary; the input's own goes into the provenance. Extensions
    that describe the input's grid are dropped when the grid changed; the provenance is a JSON
    extension.
    """
    import nibabel as nib

    original = extra.get("descrip", "")
    record = provenance_record(provenance)
    descrip = _short_descrip(record, original)
    if original and descrip != original and not original.startswith("aesr-sci"):
        record.setdefault("source_description", original)
    out.header["descrip"] = descrip.encode("latin-1")
    for code, content in extra.get("nifti_extensions", []):
        if regridded and code in _GRID_ECODES:
            logger.info("%s: dropping header extension %d, which describes the input's grid", path, code)
            continue
        out.header.extensions.append(nib.nifti1.Nifti1Extension(code, content))
    payload = json.dumps({PROVENANCE_KEY: record}, sort_keys=True, default=str).encode()
    out.header.extensions.append(nib.nifti1.Nifti1Extension(_JSON_ECODE, payload))


def write_nifti(
    image: Image,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    dtype: str | np.dtype | None = None,
) -> Path:
    """Write ``image`` as a NIfTI file, restoring the source header where it still applies.

    qform and sform keep their codes and follow the image's affine (a changed grid moves both by
    the same index transform); zooms, units, intent, description and extensions are kept. Integer
    outputs are rounded and clipped; a source's ``scl_slope``/``scl_inter`` are kept when the
    values fit, otherwise nibabel chooses new ones. Provenance goes into a JSON extension (code 6)
    and a short ``descrip``.

    Parameters
    ----------
    image
        A ``(C, X, Y, Z)`` image; ``C > 1`` is written as a 4D file.
    path
        ``.nii`` or ``.nii.gz`` output.
    overwrite
        Replace an existing file.
    dtype
        On-disk dtype; default ``image.meta.dtype``.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    OutputExistsError, FileWriteError, DataError
    """
    out = nifti_image(image, dtype=dtype, path=path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        try:
            out.to_filename(tmp)
        except OSError as exc:
            raise FileWriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    logger.debug("wrote %s %s %s", path, out.shape, out.get_data_dtype())
    return Path(path)


def nifti_image(image: Image, *, dtype: str | np.dtype | None = None, path: Any = "image") -> Any:
    """The nibabel image that :func:`write_nifti` saves: the source header restored where it still
    applies (form codes, units, repetition time, extensions), the geometry from ``image``."""
    import nibabel as nib

    meta = image.meta
    if meta.spatial_dims != 3:
        raise DataError(f"a NIfTI file needs a 3D image (C, X, Y, Z), got shape {tuple(image.data.shape)}")
    out_dtype = np.dtype(dtype or meta.dtype)
    extra = dict(meta.extra) if meta.format == "nifti" else {}
    data = np.asarray(image.data)
    if image.mask is not None and not bool(np.all(image.mask)):
        fill = 0.0 if meta.nodata is None else meta.nodata
        valid = image.mask if image.mask.ndim == data.ndim else image.mask[np.newaxis]
        data = np.where(valid, data, np.asarray(fill, dtype=data.dtype))

    version = extra.get("nifti_version", 1)
    img_cls, hdr_cls = (
        (nib.Nifti2Image, nib.Nifti2Header) if version == 2 else (nib.Nifti1Image, nib.Nifti1Header)
    )
    if "nifti_header" in extra:
        hdr = hdr_cls(binaryblock=extra["nifti_header"], check=False)
        hdr.extensions.clear()
    else:
        hdr = hdr_cls()
        hdr.set_xyzt_units("mm", "sec")
    source_pixdim = np.array(hdr["pixdim"], copy=True)  # pixdim[4:]: repetition time and beyond
    spatial = image.spatial_shape
    source_shape = tuple(extra.get("nifti_shape", ()))
    four_d = image.channels > 1 or len(source_shape) >= 4
    shape = (*spatial, image.channels) if four_d else spatial
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(out_dtype)

    arr, keep_scaling = _file_array(
        np.moveaxis(data, 0, 3) if four_d else data[0], out_dtype, extra, hdr, path
    )
    out = img_cls(arr, None, header=hdr)
    if keep_scaling is not None:  # the image constructor resets the header's scaling
        out.header.set_slope_inter(*keep_scaling)
    affine = np.asarray(meta.affine, dtype=np.float64)
    source_affine = np.asarray(extra["nifti_affine"]) if "nifti_affine" in extra else None
    if source_affine is None:
        out.set_sform(affine, code=2)
        out.set_qform(affine, code=2 if _is_rigid(affine[:3, :3]) else 0)
    elif not np.array_equal(affine, source_affine):
        _set_forms(out, hdr, np.linalg.solve(source_affine, affine), affine, len(shape))
    regridded = source_affine is not None and (
        not np.array_equal(affine, source_affine) or tuple(spatial) != source_shape[:3]
    )

    if "nifti_header" in extra:
        out.header["pixdim"][4:] = source_pixdim[4:]
    _describe(out, extra, meta.provenance, path, regridded=regridded)
    return out


def nifti_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-serialisable summary of a NIfTI file (see :func:`aesr_sci.io.info`)."""
    import nibabel as nib

    path = Path(path)
    image = read_nifti(path, check_finite=False)
    meta, extra = image.meta, image.meta.extra
    corners = image.corners()
    return {
        "path": str(path),
        "format": "nifti",
        "nifti_version": extra["nifti_version"],
        "shape": [image.channels, *image.spatial_shape],
        "file_shape": list(extra["nifti_shape"]),
        "channels": image.channels,
        "dtype": meta.dtype,
        "voxel_size": [round(v, 6) for v in meta.spacing],
        "units": list(extra["xyzt_units"]),
        "orientation": "".join(nib.aff2axcodes(meta.affine)),
        "affine": meta.affine.tolist(),
        "qform_code": extra["qform_code"],
        "sform_code": extra["sform_code"],
        "bounds": {"min": corners.min(axis=0).tolist(), "max": corners.max(axis=0).tolist()},
        "scl_slope": extra["scl_slope"],
        "scl_inter": extra["scl_inter"],
        "intent": extra["intent"][0],
        "description": extra["descrip"],
        "extensions": [code for code, _ in extra["nifti_extensions"]],
        "value_range": [float(np.nanmin(image.data)), float(np.nanmax(image.data))],
        "nonfinite": count_nonfinite(image.data),
        "provenance": dict(meta.provenance),
    }
