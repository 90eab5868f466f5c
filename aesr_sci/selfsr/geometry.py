"""The geometry of self-supervised super-resolution: the thick axis, the scale, the output grid, the orientations.

A thick-slice volume (say 0.9 x 0.9 x 5.5 mm) is sharp within each slice and coarse across them.
:func:`slice_geometry` reads from the voxel sizes which axis is thick and by how much
(:class:`SliceGeometry`), :func:`output_meta` places the super-resolved volume on the
field-of-view-preserving grid (every thick slice's centre is the mean position of the thin slices
it covers), and :func:`combine_orientations` applies a 2D super-resolver across the thick axis in
the two orthogonal planes that contain it and averages them, as SMORE and ECLARE do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..spatial import SpatialMeta, as_int_scale

__all__ = ["SliceGeometry", "combine_orientations", "output_meta", "slice_geometry"]

logger = logging.getLogger(__name__)

_ISOTROPIC_RATIO = 1.5  # thickest / finest spacing below this (rounding to 1) counts as isotropic


@dataclass(frozen=True)
class SliceGeometry:
    """Which axis of a volume is thick, the integer scale across it, and the slice thickness.

    Attributes
    ----------
    axis
        The thick (through-plane) array axis, or ``None`` for an isotropic input, which is
        super-resolved along every axis by ``scale`` (learning from the input degraded one scale
        further).
    scale
        The integer factor across the thick axis (every axis when ``axis`` is ``None``).
    spacing
        Voxel size along each array axis, in world units (mm).
    thickness
        Slice thickness along the thick axis in mm: the spacing unless given (a smaller thickness
        means a gap between slices, a larger one overlapping slices).
    """

    axis: int | None
    scale: int
    spacing: tuple[float, ...]
    thickness: float

    @property
    def in_plane(self) -> tuple[int, ...]:
        """The array axes that are not thick (all of them for an isotropic input)."""
        return tuple(a for a in range(len(self.spacing)) if a != self.axis)

    @property
    def fine_spacing(self) -> float:
        """The finest in-plane voxel size, the unit in which profiles are measured."""
        return min(self.spacing[a] for a in self.in_plane)

    @property
    def fwhm(self) -> float:
        """The slice thickness in fine voxels: the header's slice-profile width."""
        return self.thickness / self.fine_spacing

    @property
    def gap(self) -> float:
        """The gap between slices as a fraction of the spacing (negative when slices overlap)."""
        if self.axis is None:
            return 0.0
        return 1.0 - self.thickness / self.spacing[self.axis]

    @property
    def zoom(self) -> tuple[int, ...]:
        """The factor per array axis: ``scale`` on the thick axis and 1 elsewhere (all axes if isotropic)."""
        return tuple(self.scale if self.axis in (None, a) else 1 for a in range(len(self.spacing)))


def slice_geometry(
    meta: SpatialMeta,
    *,
    scale: int | None = None,
    thickness: float | None = None,
    name: str = "the input",
) -> SliceGeometry:
    """The thick axis and scale of a volume, read from its voxel sizes.

    The scale is the ratio of the thickest to the finest voxel size, rounded (0.9 x 0.9 x 5.5 mm
    gives 6, 0.86 x 0.86 x 2.4 mm gives 3); ``scale`` overrides it. An isotropic input (a ratio
    that rounds to 1) has no thick axis: with a ``scale`` it is super-resolved along every axis
    (zero-shot, from the input degraded one scale further), without one it is refused.

    Parameters
    ----------
    meta
        The input's metadata (its spacing is read from the affine).
    scale
        The factor across the thick axis (or every axis of an isotropic input); default from the header.
    thickness
        The slice thickness in mm, when it differs from the spacing (slices with gaps); NIfTI has
        no standard field for it. Default: the spacing along the thick axis.
    name
        The input's name, for messages.

    Raises
    ------
    DataError
        For an isotropic input without a scale, two thick axes, or a non-positive thickness.

    Examples
    --------
    >>> import numpy as np
    >>> g = slice_geometry(SpatialMeta(np.diag([0.9, 0.9, 5.5, 1.0])))
    >>> g.axis, g.scale, g.zoom
    (2, 6, (1, 1, 6))
    """
    spacing = tuple(float(v) for v in meta.spacing)
    if scale is not None:
        try:
            scale = as_int_scale(scale, 1)[0]
        except ValueError as exc:
            raise DataError(f"{name}: {exc}") from None
    order = np.argsort(spacing)
    ratio = spacing[order[-1]] / spacing[order[0]]
    if len(spacing) < 3 or round(ratio) <= 1 or ratio < _ISOTROPIC_RATIO:
        if scale is None:
            raise DataError(
                f"{name} has no thick axis (voxel size {_mm(spacing)}): give --scale S to learn from "
                "the input degraded one scale further"
            )
        return SliceGeometry(None, scale, spacing, spacing[order[-1]])
    axis = int(order[-1])
    second = spacing[order[-2]] / spacing[order[0]]
    if round(second) > 1 and second >= _ISOTROPIC_RATIO:
        raise DataError(
            f"{name} has two coarse axes (voxel size {_mm(spacing)}): only one thick axis is supported; "
            "resample the finer of the two to the in-plane voxel size first"
        )
    if thickness is not None and not (np.isfinite(thickness) and thickness > 0):
        raise DataError(f"{name}: the slice thickness must be a positive number of mm (got {thickness!r})")
    geometry = SliceGeometry(
        axis, round(ratio) if scale is None else scale, spacing, float(thickness or spacing[axis])
    )
    if abs(ratio - geometry.scale) > 0.05 * geometry.scale:
        logger.info(
            "%s: thick/fine voxel ratio %.2f, super-resolving by %d (output slices %.3g mm apart)",
            name,
            ratio,
            geometry.scale,
            spacing[axis] / geometry.scale,
        )
    return geometry


def _mm(spacing: tuple[float, ...]) -> str:
    return " x ".join(f"{v:.3g}" for v in spacing) + " mm"


def output_meta(meta: SpatialMeta, geometry: SliceGeometry) -> SpatialMeta:
    """The metadata of the super-resolved volume, on the field-of-view-preserving grid.

    Each input voxel becomes ``zoom`` output voxels along each axis; the outer corners of the field
    of view stay put, so every thick slice's centre is the mean position of the thin slices that
    replace it (see :func:`aesr_sci.spatial.zoom_affine`, ``convention="fov"``).

    Examples
    --------
    >>> import numpy as np
    >>> meta = SpatialMeta(np.diag([1.0, 1.0, 4.0, 1.0]))
    >>> out = output_meta(meta, slice_geometry(meta))
    >>> out.spacing, out.origin
    ((1.0, 1.0, 1.0), (0.0, 0.0, -1.5))
    """
    return meta.zoom(geometry.zoom, convention="fov").with_provenance(
        selfsr={"thick_axis": geometry.axis, "scale": geometry.scale, "thickness_mm": geometry.thickness}
    )


def combine_orientations(
    volume: np.ndarray,
    upsample: Callable[[np.ndarray], np.ndarray],
    *,
    axis: int,
    scale: int,
    batch_size: int = 16,
) -> np.ndarray:
    """Super-resolve ``volume`` across ``axis`` with a 2D super-resolver applied in both orthogonal planes.

    The volume is cut into the planes that contain the thick axis, once along each of the two
    other axes; ``upsample`` super-resolves each stack of planes across their first axis, and the
    two volumes are averaged (SMORE, ECLARE).

    Parameters
    ----------
    volume
        ``(C, X, Y, Z)`` array.
    upsample
        Maps a stack of planes ``(N, C, H, W)``, thick along ``H``, to ``(N, C, H * scale, W)``.
    axis
        The thick spatial axis, 0, 1 or 2.
    scale
        The factor across the thick axis.
    batch_size
        Planes handed to ``upsample`` at a time.

    Returns
    -------
    numpy.ndarray
        ``(C, *spatial)`` float32 with ``scale`` times more voxels along ``axis``.

    Raises
    ------
    DataError
        If ``volume`` is not ``(C, X, Y, Z)`` or ``upsample`` returns the wrong shape.
    """
    if volume.ndim != 4 or axis not in (0, 1, 2):
        raise DataError(
            f"combine_orientations expects a (C, X, Y, Z) volume and axis 0..2, got {volume.shape}"
        )
    channels = volume.shape[0]
    thick = np.moveaxis(np.asarray(volume, dtype=np.float32), 1 + axis, 1)  # (C, T, A, B)
    total = np.zeros((channels, thick.shape[1] * scale, *thick.shape[2:]), dtype=np.float64)
    for stack_axis in (2, 3):
        planes = np.moveaxis(thick, stack_axis, 0)  # (N, C, T, W)
        out = np.concatenate(
            [
                _upsampled(upsample, planes[i : i + batch_size], scale)
                for i in range(0, len(planes), batch_size)
            ]
        )
        total += np.moveaxis(out, 0, stack_axis)
    return np.moveaxis(total / 2.0, 1, 1 + axis).astype(np.float32)


def _upsampled(upsample: Callable[[np.ndarray], np.ndarray], planes: np.ndarray, scale: int) -> np.ndarray:
    """``upsample`` of a stack of planes, its shape checked."""
    n, c, h, w = planes.shape
    out = np.asarray(upsample(np.ascontiguousarray(planes)))
    if out.shape != (n, c, h * scale, w):
        raise DataError(
            f"the 2D super-resolver returned shape {out.shape} for planes {planes.shape}: expected "
            f"{(n, c, h * scale, w)}"
        )
    return out
