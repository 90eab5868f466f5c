"""Spatial metadata that travels with an array, and the geometry of changing its resolution.

Conventions (decided here, once, for the whole package):

* An :class:`Image` holds a channel-first array ``(C, *spatial)``: ``(C, X, Y, Z)`` for a NIfTI volume
  (the fourth NIfTI axis becomes the channels) and ``(bands, rows, cols)`` for a GeoTIFF.
* :attr:`SpatialMeta.affine` is a ``(D + 1, D + 1)`` matrix that maps a *voxel-centre index*, in the
  order of the array's spatial axes, to world coordinates. For NIfTI this is the usual affine
  (RAS+ millimetres). For GeoTIFF it maps ``(row, col)`` to ``(x, y)`` in the CRS: the adapter turns
  rasterio's corner-based ``(col, row)`` transform into this form and back, so nothing else needs to
  know about either native convention.
* Resolution changes come in two grid conventions (see :func:`zoom_affine`):

  ``"fov"``
      field-of-view preserving: the outer corners of the grid stay put. Image-domain blur and
      decimation, block means, GeoTIFF resampling.
  ``"origin"``
      origin preserving: the centre of the first voxel stays put. MRI k-space truncation on a centred
      DFT grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from .errors import DataError, ParameterError

__all__ = [
    "CONVENTIONS",
    "METHODS",
    "Convention",
    "Image",
    "Method",
    "SpatialMeta",
    "as_int_scale",
    "as_scale",
    "axis_codes",
    "opposite",
    "check_convention",
    "per_axis",
    "voxel_to_world",
    "zoom_affine",
    "zoomed_shape",
]

Convention = Literal["fov", "origin"]
CONVENTIONS: tuple[str, ...] = ("fov", "origin")


class Method(NamedTuple):
    """What a degradation method implies beyond its operator (see :mod:`aesr_sci.data.degrade`)."""

    convention: Convention
    """Grid convention of the low-resolution grid it makes, and so of a model's outputs."""
    noise: str
    """Default noise model: ``"rician"`` for magnitude MRI, ``"gaussian"`` otherwise."""


METHODS: dict[str, Method] = {
    "kspace": Method("origin", "rician"),  # MRI k-space truncation: the first voxel centre stays put
    "slice": Method("fov", "rician"),  # thick-slice MRI
    "gaussian": Method("fov", "gaussian"),  # satellite sensors
    "area": Method("fov", "gaussian"),
    "bicubic": Method("fov", "gaussian"),
}
"""The degradation methods, the one table of their names, grid conventions and noise models."""


def per_axis(
    value: Any, spatial_dims: int | None = None, *, name: str = "scale", whole: bool = True
) -> tuple[Any, ...]:
    """Parse one number, or one per spatial axis, into one checked value per axis.

    The one parser of scales, zooms and patch sizes in the package (functions, recipes, the
    command line). ``value`` may be a number, a sequence of numbers or text such as ``"2"``,
    ``"1,1,4"`` or ``"2x2"``.

    Parameters
    ----------
    value
        One number (applied to every axis) or one per axis.
    spatial_dims
        Number of spatial axes, 2 or 3; ``None`` keeps the number of values given.
    name
        What the value is, for the message (``"scale"``, ``"--patch-size"``...).
    whole
        ``True``: whole numbers of at least 1 (scale factors, patch sizes), returned as ``int``;
        ``False``: finite numbers above 0 (zooms), returned as ``float``.

    Raises
    ------
    ParameterError
        Naming ``name``, the value given and what to give instead: not a number, NaN or infinite,
        not positive, not whole, or a count that does not match ``spatial_dims``.

    Examples
    --------
    >>> per_axis("1,1,4", 3)
    (1, 1, 4)
    >>> per_axis(2, 2)
    (2, 2)
    >>> per_axis(0.5, 3, name="zoom", whole=False)
    (0.5, 0.5, 0.5)
    """
    want = "whole numbers >= 1" if whole else "finite numbers > 0"
    values = _numbers(value, name, want)
    bad = [
        v for v in values if not np.isfinite(v) or (v < 1 or not float(v).is_integer() if whole else v <= 0)
    ]
    if bad or not values:
        raise ParameterError(f"{name} must be {want}, one or one per spatial axis (got {_show(value)})")
    if spatial_dims is not None and len(values) == 1:
        values = values * spatial_dims
    if spatial_dims is not None and len(values) != spatial_dims:
        raise ParameterError(
            f"{name} has {len(values)} factors {_show(value)} but the data has {spatial_dims} spatial axes: "
            f"give one number or {spatial_dims} numbers"
        )
    return tuple(int(v) if whole else float(v) for v in values)


def _numbers(value: Any, name: str, want: str) -> list[float]:
    """``value`` as a list of floats, or a ParameterError saying what was expected."""
    if isinstance(value, str):
        items: list[Any] = [v for v in value.replace("x", ",").split(",") if v.strip()]
    elif isinstance(value, (int, float, np.integer, np.floating)):
        items = [value]
    else:
        try:
            items = list(value)
        except TypeError:
            items = [value]
    try:
        if any(isinstance(v, (bool, np.bool_)) for v in items):
            raise TypeError
        return [float(v) for v in items]
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be {want}, like 2 or 1,1,4 (got {_show(value)})") from None


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(list(value) if isinstance(value, tuple) else value)


def as_scale(scale: float | Sequence[float], spatial_dims: int, *, name: str = "scale") -> tuple[float, ...]:
    """:func:`per_axis` for positive, possibly fractional factors (zooms).

    Examples
    --------
    >>> as_scale(2, 3)
    (2.0, 2.0, 2.0)
    """
    return per_axis(scale, spatial_dims, name=name, whole=False)


def as_int_scale(
    scale: float | Sequence[float], spatial_dims: int | None = None, *, name: str = "scale"
) -> tuple[int, ...]:
    """:func:`per_axis` for whole-number factors of at least 1 (networks, degradations).

    Examples
    --------
    >>> as_int_scale([1, 1, 4], 3)
    (1, 1, 4)
    """
    return per_axis(scale, spatial_dims, name=name)


def check_convention(convention: str) -> str:
    """Return ``convention`` if it is one of :data:`CONVENTIONS`, else raise :class:`ParameterError`."""
    if convention not in CONVENTIONS:
        raise ParameterError(f"unknown grid convention {convention!r}: use one of {', '.join(CONVENTIONS)}")
    return convention


def zoom_affine(affine: np.ndarray, zoom: float | Sequence[float], *, convention: Convention) -> np.ndarray:
    """Return the affine of a grid resampled by ``zoom`` (new voxel count / old voxel count per axis).

    ``zoom > 1`` makes voxels smaller (super-resolution), ``zoom < 1`` larger (degradation). The
    voxel size along axis ``i`` is divided by ``zoom[i]``; where the grid sits depends on
    ``convention``:

    * ``"origin"``: the first voxel centre stays where it was.
    * ``"fov"``: the outer corner (index ``-0.5``) stays where it was, so the first voxel centre
      moves by ``(1 / zoom - 1) / 2`` old voxels along each axis, and for an output of
      ``n * zoom`` voxels the whole field of view is unchanged.

    Parameters
    ----------
    affine
        ``(D + 1, D + 1)`` voxel-centre index to world matrix.
    zoom
        One factor, or one per spatial axis.
    convention
        ``"fov"`` or ``"origin"``.

    Examples
    --------
    >>> import numpy as np
    >>> zoom_affine(np.eye(3), 2, convention="fov")
    array([[ 0.5 ,  0.  , -0.25],
           [ 0.  ,  0.5 , -0.25],
           [ 0.  ,  0.  ,  1.  ]])
    """
    affine = np.asarray(affine, dtype=np.float64)
    dims = affine.shape[0] - 1
    factors = np.asarray(as_scale(zoom, dims, name="zoom"))
    check_convention(convention)
    out = affine.copy()
    linear = affine[:dims, :dims]
    out[:dims, :dims] = linear / factors[np.newaxis, :]
    if convention == "fov":
        shift = 0.5 * (1.0 / factors - 1.0)  # in old voxels, per axis
        out[:dims, dims] = affine[:dims, dims] + linear @ shift
    return out


def zoomed_shape(shape: Sequence[int], zoom: float | Sequence[float]) -> tuple[int, ...]:
    """Spatial shape after resampling by ``zoom``; the product must be a whole number of voxels.

    Raises
    ------
    DataError
        If ``n * zoom`` is not an integer along some axis (crop the input to a multiple first).
    """
    factors = as_scale(zoom, len(shape), name="zoom")
    out = []
    for n, z in zip(shape, factors, strict=True):
        m = n * z
        if abs(m - round(m)) > 1e-6 or round(m) < 1:
            raise DataError(
                f"a spatial size of {n} cannot be resampled by {z:g}: "
                f"crop the image to a multiple of {1 / z:g} voxels first"
            )
        out.append(round(m))
    return tuple(out)


def voxel_to_world(affine: np.ndarray, index: np.ndarray | Sequence[float]) -> np.ndarray:
    """World coordinates of voxel-centre indices ``(..., D)`` under ``affine``."""
    affine = np.asarray(affine, dtype=np.float64)
    idx = np.asarray(index, dtype=np.float64)
    dims = affine.shape[0] - 1
    return idx @ affine[:dims, :dims].T + affine[:dims, dims]


WORLD_LETTERS: dict[int, tuple[tuple[str, str], ...]] = {
    3: (("L", "R"), ("P", "A"), ("I", "S")),  # NIfTI world: RAS+ millimetres
    2: (("W", "E"), ("S", "N")),  # a raster's CRS: x east, y north
}
"""Letters of the negative and positive direction of each world axis."""


def axis_codes(affine: np.ndarray) -> tuple[str, ...]:
    """The world direction each array axis points to as its index grows, one letter per axis.

    ``("R", "A", "S")`` for a RAS+ volume, as :func:`nibabel.orientations.aff2axcodes` gives for the
    same affine; ``("S", "E")`` for a north-up raster, whose rows run south and columns east.

    Examples
    --------
    >>> axis_codes(np.diag([-1.0, 1.0, 2.0, 1.0]))
    ('L', 'A', 'S')
    >>> axis_codes(np.array([[0.0, 10.0, 500.0], [-10.0, 0.0, 900.0], [0.0, 0.0, 1.0]]))
    ('S', 'E')
    """
    affine = np.asarray(affine, dtype=np.float64)
    dims = affine.shape[0] - 1
    linear = affine[:dims, :dims] / np.maximum(np.linalg.norm(affine[:dims, :dims], axis=0), 1e-12)
    u, _, vt = np.linalg.svd(linear)
    rotation = u @ vt  # the closest shear-free matrix, as nibabel's io_orientation
    codes = [""] * dims
    for axis in np.argsort(np.min(-(rotation**2), axis=0), kind="stable"):  # strongest axes first
        world = int(np.argmax(np.abs(rotation[:, axis])))
        codes[axis] = WORLD_LETTERS[dims][world][int(rotation[world, axis] > 0)]
        rotation[world, :] = 0.0
    return tuple(codes)


def opposite(code: str, spatial_dims: int) -> str:
    """The letter of the opposite direction: ``"R"`` -> ``"L"`` (3D), ``"S"`` -> ``"N"`` (2D: south)."""
    for neg, pos in WORLD_LETTERS[spatial_dims]:
        if code in (neg, pos):
            return pos if code == neg else neg
    raise ParameterError(f"{code!r} is not a direction letter of a {spatial_dims}D world")


@dataclass(frozen=True, eq=False)
class SpatialMeta:
    """Where an array lives in the world and what a writer needs to write it back.

    Attributes
    ----------
    affine
        ``(D + 1, D + 1)`` voxel-centre index to world matrix (see the module docstring).
    crs
        Coordinate reference system as WKT, or ``None`` (NIfTI, or a GeoTIFF without one).
    nodata
        The value that marks missing pixels on disk, or ``None``.
    band_names
        One name per channel (GeoTIFF band descriptions; empty strings where unnamed).
    dtype
        The on-disk data type, used when writing back (integers are rounded and clipped).
    format
        ``"nifti"``, ``"geotiff"`` or ``None`` for an array that came from neither.
    extra
        What the format's writer needs to write the file back faithfully: for NIfTI the header,
        for GeoTIFF the profile, tags, scales, offsets, colour interpretation. Opaque outside
        :mod:`aesr_sci.io`.
    provenance
        How this image was made (package version, model, scale, degradation), written into the
        output's NIfTI extension or GeoTIFF tags.
    """

    affine: np.ndarray
    crs: str | None = None
    nodata: float | None = None
    band_names: tuple[str, ...] = ()
    dtype: str = "float32"
    format: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        affine = np.array(self.affine, dtype=np.float64)
        if affine.ndim != 2 or affine.shape[0] != affine.shape[1] or affine.shape[0] not in (3, 4):
            raise ValueError(f"affine must be 3x3 (2D) or 4x4 (3D), got shape {affine.shape}")
        affine.setflags(write=False)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "band_names", tuple(str(b) for b in self.band_names))
        object.__setattr__(self, "dtype", str(np.dtype(self.dtype)))

    @property
    def spatial_dims(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return self.affine.shape[0] - 1

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size along each array axis, in world units (norms of the affine's columns)."""
        d = self.spatial_dims
        return tuple(float(v) for v in np.linalg.norm(self.affine[:d, :d], axis=0))

    @property
    def origin(self) -> tuple[float, ...]:
        """World coordinates of the centre of the first voxel."""
        d = self.spatial_dims
        return tuple(float(v) for v in self.affine[:d, d])

    def replace(self, **changes: Any) -> SpatialMeta:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def zoom(self, zoom: float | Sequence[float], *, convention: Convention) -> SpatialMeta:
        """A copy for a grid resampled by ``zoom`` under ``convention`` (see :func:`zoom_affine`)."""
        return self.replace(affine=zoom_affine(self.affine, zoom, convention=convention))

    def with_provenance(self, **entries: Any) -> SpatialMeta:
        """A copy with entries added to :attr:`provenance`."""
        return self.replace(provenance={**dict(self.provenance), **entries})


@dataclass(frozen=True, eq=False)
class Image:
    """A channel-first array ``(C, *spatial)`` with its :class:`SpatialMeta`.

    Attributes
    ----------
    data
        ``(C, X, Y, Z)`` for volumes, ``(bands, rows, cols)`` for rasters. Any numeric dtype;
        values are in the file's physical units (NIfTI scaling and GeoTIFF scales applied by the
        reader only when the format asks for it, see :mod:`aesr_sci.io`).
    meta
        Where the array lives and how to write it back.
    mask
        Optional boolean validity (True = valid, not nodata): ``(*spatial)`` when it holds for every
        band (a NIfTI, a GeoTIFF's internal mask or alpha band, nodata in the same pixels of every
        band), or ``(C, *spatial)``, one mask per band (GDAL's per-band nodata: a pixel where one
        band equals nodata is missing in that band only). :attr:`common_mask` reduces it to
        ``(*spatial)``.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image(np.zeros((1, 4, 4, 4), np.float32), SpatialMeta(np.diag([2.0, 2.0, 2.0, 1.0])))
    >>> img.spatial_shape, img.meta.spacing
    ((4, 4, 4), (2.0, 2.0, 2.0))
    """

    data: np.ndarray
    meta: SpatialMeta
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.data.ndim != self.meta.spatial_dims + 1:
            raise DataError(
                f"an image with a {self.meta.spatial_dims}D affine needs a (C, *spatial) array of "
                f"{self.meta.spatial_dims + 1} dimensions, got shape {tuple(self.data.shape)}"
            )
        if self.mask is not None and tuple(self.mask.shape) not in (
            tuple(self.data.shape[1:]),
            tuple(self.data.shape),
        ):
            raise DataError(
                f"mask shape {tuple(self.mask.shape)} matches neither the image's spatial shape "
                f"{tuple(self.data.shape[1:])} nor its shape {tuple(self.data.shape)} (one mask per band)"
            )

    @property
    def spatial_dims(self) -> int:
        return self.meta.spatial_dims

    @property
    def channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.data.shape[1:])

    @property
    def affine(self) -> np.ndarray:
        return self.meta.affine

    def world(self, index: np.ndarray | Sequence[float]) -> np.ndarray:
        """World coordinates of voxel-centre indices ``(..., D)``."""
        return voxel_to_world(self.meta.affine, index)

    def corners(self) -> np.ndarray:
        """World coordinates of the ``2**D`` outer corners of the field of view (index -0.5 and n-0.5)."""
        import itertools

        lo_hi = [(-0.5, n - 0.5) for n in self.spatial_shape]
        return self.world(np.array(list(itertools.product(*lo_hi))))

    @property
    def common_mask(self) -> np.ndarray | None:
        """``(*spatial)`` validity, True where every band is valid (a per-band mask reduced), or None."""
        if self.mask is None or self.mask.ndim == self.spatial_dims:
            return self.mask
        return np.all(self.mask, axis=0)

    def replace(self, **changes: Any) -> Image:
        """A copy with some fields changed (``data``, ``meta`` or ``mask``)."""
        return dataclasses.replace(self, **changes)
