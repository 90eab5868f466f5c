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
from typing import Any, Literal

import numpy as np

from .errors import DataError

__all__ = [
    "CONVENTIONS",
    "Convention",
    "Image",
    "SpatialMeta",
    "as_scale",
    "as_int_scale",
    "voxel_to_world",
    "zoom_affine",
    "zoomed_shape",
]

Convention = Literal["fov", "origin"]
CONVENTIONS: tuple[str, ...] = ("fov", "origin")


def as_scale(scale: float | Sequence[float], spatial_dims: int, *, name: str = "scale") -> tuple[float, ...]:
    """Return ``scale`` as one positive factor per spatial axis.

    Parameters
    ----------
    scale
        A single factor (applied to every axis) or one factor per axis, e.g. ``(1, 1, 4)``.
    spatial_dims
        Number of spatial axes, 2 or 3.

    Raises
    ------
    ValueError
        If the factor count does not match ``spatial_dims`` or a factor is not positive.

    Examples
    --------
    >>> as_scale(2, 3)
    (2.0, 2.0, 2.0)
    >>> as_scale([1, 1, 4], 3)
    (1.0, 1.0, 4.0)
    """
    if isinstance(scale, (int, float, np.integer, np.floating)):
        factors = (float(scale),) * spatial_dims
    else:
        factors = tuple(float(s) for s in scale)
        if len(factors) == 1:
            factors = factors * spatial_dims
    if len(factors) != spatial_dims:
        raise ValueError(
            f"{name} has {len(factors)} factors but the data has {spatial_dims} spatial axes: "
            f"give one number or {spatial_dims} numbers"
        )
    if any(not np.isfinite(s) or s <= 0 for s in factors):
        raise ValueError(f"{name} factors must be positive (got {list(factors)})")
    return factors


def as_int_scale(
    scale: float | Sequence[float], spatial_dims: int | None = None, *, name: str = "scale"
) -> tuple[int, ...]:
    """Like :func:`as_scale`, for whole-number factors of at least 1 (networks, degradations).

    ``spatial_dims=None`` keeps the number of factors given.

    Raises
    ------
    ValueError
        If a factor is not a whole number of at least 1, or the count does not match.

    Examples
    --------
    >>> as_int_scale([1, 1, 4], 3)
    (1, 1, 4)
    """
    values = [scale] if isinstance(scale, (int, float, np.integer, np.floating)) else list(scale)
    if not values:
        raise ValueError(f"{name} is empty: give one factor, or one per spatial axis")
    bad = [
        v
        for v in values
        if isinstance(v, bool)
        or not isinstance(v, (int, float, np.integer, np.floating))
        or v < 1
        or float(v) != int(v)
    ]
    if bad:
        raise ValueError(f"{name} factors must be whole numbers >= 1, one per spatial axis (got {values!r})")
    if spatial_dims is None:
        return tuple(int(v) for v in values)
    return tuple(int(v) for v in as_scale(values, spatial_dims, name=name))


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
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown grid convention {convention!r}: use one of {', '.join(CONVENTIONS)}")
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
