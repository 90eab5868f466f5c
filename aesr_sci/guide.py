"""Guides: check that a guide lies on a target's output grid, make Wald pairs, find a Sentinel-2 product's bands.

A *guide* is a co-registered image of the same scene on the output grid: same CRS, pixel size equal
to the target's divided by the scale, and grids sharing their outer (upper-left) corner, as the
10, 20 and 60 m grids of one Sentinel-2 L1C tile do. :func:`check_guide` refuses anything else with
one line that says by how much it is off and how to fix it, and returns the :class:`GuideGrid` the
output lands on.

Extents: when the two far ends differ (a guide larger than ``scale`` times the target by a partial
target pixel, or a target with a last row the guide does not cover) both are cropped at the far
end to the common whole target pixels. A guide whose corner is elsewhere is refused rather than
cropped, because the output would then lie on neither input's grid.

Wald's protocol (DSen2, Lanaras et al. 2018) trains on the product itself: the target *and* the
guide are degraded by the scale (:func:`wald_degrade`), the network learns (degraded target,
degraded guide) -> target, and at inference maps (target, guide) -> target on the guide's grid.

Nothing here reads pixels: the Sentinel-2 helpers read metadata only (:func:`aesr_sci.io.read_meta`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, MismatchError
from .spatial import Image, SpatialMeta, as_int_scale

__all__ = [
    "S2_BANDS",
    "GuideGrid",
    "GuidedBands",
    "ProductBand",
    "check_guide",
    "check_guide_bands",
    "check_guide_shape",
    "crop_to_guide",
    "dsen2_sigma",
    "guide_scale",
    "join_guides",
    "sentinel2_band",
    "sentinel2_bands",
    "sentinel2_plan",
    "upsample_guide",
    "wald_degrade",
    "wald_triple",
]

log = logging.getLogger(__name__)

_SPACING_RTOL = 1e-4  # relative tolerance on pixel sizes (NIfTI affines are stored in float32)
_SHIFT_TOL = 1e-3  # guide pixels


# --------------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class GuideGrid:
    """Where a target and its guide overlap, and the grid the output lands on.

    Attributes
    ----------
    target_window, guide_window
        ``(start, stop)`` per spatial axis, in target and in guide pixels: the parts of each input
        that the output covers (the whole inputs unless a far end was cropped).
    shape
        Spatial shape of the output (the guide window's shape).
    meta
        The output's metadata: the guide's affine and CRS, the target's band names, dtype, nodata
        and writer settings.
    crop_note
        Empty, or what was cropped at the far end (also logged at INFO level).
    """

    target_window: tuple[tuple[int, int], ...]
    guide_window: tuple[tuple[int, int], ...]
    shape: tuple[int, ...]
    meta: SpatialMeta
    crop_note: str = ""

    @property
    def cropped(self) -> bool:
        """Whether either input loses pixels at its far end (:attr:`crop_note` says how many)."""
        return bool(self.crop_note)


def _crs_name(wkt: str | None) -> str:
    if wkt is None:
        return "no CRS"
    code = re.search(r'AUTHORITY\["EPSG","(\d+)"\]\]\s*$', wkt) or re.search(r'ID\["EPSG",(\d+)\]\]\s*$', wkt)
    if code:
        return f"EPSG:{code.group(1)}"
    name = re.match(r'\s*\w+\["([^"]+)"', wkt)
    return name.group(1) if name else wkt[:40]


def _units(meta: SpatialMeta) -> str:
    if meta.format == "nifti" or (meta.format is None and meta.spatial_dims == 3):
        return " mm"
    return " m" if meta.crs and 'UNIT["metre"' in meta.crs else ""


def _sizes(values: Sequence[float], units: str) -> str:
    return " x ".join(f"{round(float(v), 4) + 0.0:.6g}" for v in values) + units  # + 0.0: no "-0"


def _georeferenced(meta: SpatialMeta) -> bool:
    """False for a GeoTIFF with neither CRS nor transform (GDAL's identity pixel grid)."""
    identity = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5], [0.0, 0.0, 1.0]])
    return not (meta.crs is None and meta.format == "geotiff" and np.allclose(meta.affine, identity))


def _fix_hint(
    target_meta: SpatialMeta,
    target_shape: Sequence[int],
    spacing: Sequence[float],
    *,
    resampling: str = "cubic",
) -> str:
    """How to put a guide onto the target's grid divided by the scale."""
    if target_meta.format == "geotiff" or (target_meta.crs is not None and target_meta.spatial_dims == 2):
        affine = target_meta.affine
        corners = [affine[:2, :2] @ np.array(c) + affine[:2, 2] for c in _corner_indices(target_shape)]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        return (
            f"resample the guide onto the target's grid: gdalwarp -tr {spacing[1]:.6g} {spacing[0]:.6g} "
            f"-te {min(xs):.6f} {min(ys):.6f} {max(xs):.6f} {max(ys):.6f} -r {resampling} GUIDE OUT.tif"
        )
    return (
        "resample the guide onto the target's grid with voxels divided by the scale "
        "(e.g. nibabel.processing.resample_from_to, ANTs or FSL flirt -applyxfm)"
    )


def _axes(meta: SpatialMeta) -> str:
    return "rows x columns" if meta.format == "geotiff" else "voxel axes"


def _corner_indices(shape: Sequence[int]) -> list[tuple[float, ...]]:
    import itertools

    return list(itertools.product(*[(-0.5, n - 0.5) for n in shape]))


def _check_crs(target_meta: SpatialMeta, guide_meta: SpatialMeta, guide_name: str) -> None:
    if target_meta.crs == guide_meta.crs or _crs_name(target_meta.crs) == _crs_name(guide_meta.crs):
        return
    raise MismatchError(
        f"{guide_name}: the guide is in {_crs_name(guide_meta.crs)} but the target in "
        f"{_crs_name(target_meta.crs)}: reproject the guide onto the target's grid "
        f"(gdalwarp -t_srs with the target's CRS, then -tr and -te as for a shifted grid)"
    )


def _other_scale(target: Sequence[float], guide: Sequence[float]) -> str:
    ratio = np.asarray(target) / np.asarray(guide)
    if (
        np.allclose(ratio, np.round(ratio), rtol=_SPACING_RTOL)
        and np.all(np.round(ratio) >= 1)
        and ratio.max() > 1.5
    ):
        factors = [int(r) for r in np.round(ratio)]
        shown = factors[0] if len(set(factors)) == 1 else factors
        return f"use a model of scale {shown} with this guide, or "
    return ""


def _check_pixels(
    target_meta: SpatialMeta,
    guide_meta: SpatialMeta,
    factors: Sequence[int],
    target_shape: Sequence[int],
    guide_name: str,
) -> None:
    expected = np.asarray(target_meta.spacing) / np.asarray(factors)
    got = np.asarray(guide_meta.spacing)
    units = _units(target_meta)
    if not np.allclose(got, expected, rtol=_SPACING_RTOL, atol=0):
        raise MismatchError(
            f"{guide_name}: pixel size {_sizes(got, units)}, but the target's {_sizes(target_meta.spacing, units)} "
            f"divided by the scale {list(factors)} is {_sizes(expected, units)}: "
            + _other_scale(target_meta.spacing, got)
            + _fix_hint(target_meta, target_shape, expected)
        )
    d = target_meta.spatial_dims
    linear_t = target_meta.affine[:d, :d] / np.asarray(factors)[np.newaxis, :]
    if not np.allclose(
        guide_meta.affine[:d, :d], linear_t, rtol=0, atol=_SPACING_RTOL * float(expected.max())
    ):
        raise MismatchError(
            f"{guide_name}: the guide's axes point in other directions than the target's (rotated or "
            f"flipped grid): " + _fix_hint(target_meta, target_shape, expected)
        )


def _corner_offset(
    target_meta: SpatialMeta,
    guide_meta: SpatialMeta,
    factors: Sequence[int],
    target_shape: Sequence[int],
    guide_name: str,
) -> None:
    """Refuse a guide whose outer corner is not the target's (by a fraction or by whole pixels)."""
    d = target_meta.spatial_dims
    corner = np.full(d, -0.5)
    world = guide_meta.affine[:d, :d] @ corner + guide_meta.affine[:d, d]
    # the guide's corner in guide pixels from the target's corner (0 when the grids share it)
    in_target = np.linalg.solve(target_meta.affine[:d, :d], world - target_meta.affine[:d, d])
    offset = (in_target + 0.5) * np.asarray(factors)
    if np.all(np.abs(offset) <= _SHIFT_TOL):
        return
    spacing = np.asarray(guide_meta.spacing)
    units = _units(target_meta)
    fraction = offset - np.round(offset)
    shifted = bool(np.any(np.abs(fraction) > _SHIFT_TOL))
    off = fraction if shifted else offset
    where = f"{_sizes(off, ' guide pixels')} ({_axes(guide_meta)}; {_sizes(off * spacing, units)})"
    what = (
        f"shifted off the target's grid by {where}"
        if shifted
        else f"on the target's grid but its corner is {where} away from the target's"
    )
    # whole pixels: nearest-neighbour copies the pixels exactly; a fraction needs interpolation
    hint = _fix_hint(target_meta, target_shape, spacing, resampling="cubic" if shifted else "near")
    raise MismatchError(f"{guide_name}: the guide is {what}: {hint}")


def check_guide(
    target_meta: SpatialMeta,
    guide_meta: SpatialMeta,
    scale: int | Sequence[int],
    *,
    target_shape: Sequence[int],
    guide_shape: Sequence[int],
    guide_name: str = "guide",
) -> GuideGrid:
    """Check that a guide lies on the target's grid divided by ``scale``; return the output grid.

    Parameters
    ----------
    target_meta, guide_meta
        The two images' metadata (:func:`aesr_sci.io.read_meta` reads it without the pixels).
    scale
        The model's factor, one or one per spatial axis.
    target_shape, guide_shape
        Spatial shapes, or ``(C, *spatial)`` shapes (the channel axis is dropped).
    guide_name
        How messages name the guide (its file name).

    Returns
    -------
    GuideGrid
        The windows of both inputs the output covers and the output's metadata and shape.

    Raises
    ------
    MismatchError
        One line: a different dimensionality or CRS, a pixel size other than the target's divided
        by ``scale`` (both sizes and the expected one), axes in other directions, a corner off the
        target's (by how much in guide pixels and in world units, and a ``gdalwarp`` line that fixes
        it), or no common pixel. GeoTIFFs with neither CRS nor transform on both sides are taken to
        share their upper-left corner and only their shapes are checked.

    Examples
    --------
    >>> import numpy as np
    >>> t = SpatialMeta(np.array([[0.0, 20.0, 10.0], [-20.0, 0.0, -10.0], [0.0, 0.0, 1.0]]))
    >>> g = SpatialMeta(np.array([[0.0, 10.0, 5.0], [-10.0, 0.0, -5.0], [0.0, 0.0, 1.0]]))
    >>> check_guide(t, g, 2, target_shape=(30, 40), guide_shape=(61, 80)).shape  # one extra guide row
    (60, 80)
    """
    d = target_meta.spatial_dims
    if guide_meta.spatial_dims != d:
        raise MismatchError(f"{guide_name}: the guide is {guide_meta.spatial_dims}D but the target is {d}D")
    try:
        factors = as_int_scale(scale, d)
    except (ValueError, TypeError) as exc:
        raise MismatchError(str(exc)) from None
    t_shape = tuple(int(n) for n in tuple(target_shape)[-d:])
    g_shape = tuple(int(n) for n in tuple(guide_shape)[-d:])
    if _georeferenced(target_meta) or _georeferenced(guide_meta):
        _check_crs(target_meta, guide_meta, guide_name)
        _check_pixels(target_meta, guide_meta, factors, t_shape, guide_name)
        _corner_offset(target_meta, guide_meta, factors, t_shape, guide_name)
        affine = guide_meta.affine
    else:
        log.info(
            "neither input is georeferenced: %s is taken to share the target's upper-left corner", guide_name
        )
        affine = target_meta.zoom(factors, convention="fov").affine
    common = tuple(min(t, g // s) for t, g, s in zip(t_shape, g_shape, factors))
    if min(common) < 1:
        raise MismatchError(
            f"{guide_name}: the guide ({'x'.join(map(str, g_shape))} pixels) does not cover one whole target "
            f"pixel at the scale {list(factors)}"
        )
    out_shape = tuple(n * s for n, s in zip(common, factors))
    note = ""
    if common != t_shape or out_shape != g_shape:
        note = (
            f"cropped at the far end: target {'x'.join(map(str, t_shape))} -> {'x'.join(map(str, common))}, "
            f"guide {'x'.join(map(str, g_shape))} -> {'x'.join(map(str, out_shape))} pixels"
        )
        log.info("%s: %s", guide_name, note)
    meta = target_meta.replace(affine=affine, crs=guide_meta.crs if guide_meta.crs else target_meta.crs)
    return GuideGrid(
        target_window=tuple((0, n) for n in common),
        guide_window=tuple((0, n) for n in out_shape),
        shape=out_shape,
        meta=meta,
        crop_note=note,
    )


def guide_scale(
    target_meta: SpatialMeta,
    guide_meta: SpatialMeta,
    *,
    target_shape: Sequence[int],
    guide_shape: Sequence[int],
    guide_name: str = "guide",
) -> tuple[int, ...]:
    """The scale a guide implies: the target's pixel size over the guide's, per axis.

    GeoTIFFs with neither CRS nor transform on both sides have no pixel size: the ratio of their
    shapes is taken (rounded down, as :func:`check_guide` crops the far end). The grid itself is
    checked by :func:`check_guide` with the scale returned.

    Raises
    ------
    MismatchError
        One line: a different dimensionality or CRS, or guide pixels that are not a whole number of
        times finer than the target's (at least twice along some axis).

    Examples
    --------
    >>> t = SpatialMeta(np.array([[0.0, 20.0, 10.0], [-20.0, 0.0, -10.0], [0.0, 0.0, 1.0]]))
    >>> g = SpatialMeta(np.array([[0.0, 10.0, 5.0], [-10.0, 0.0, -5.0], [0.0, 0.0, 1.0]]))
    >>> guide_scale(t, g, target_shape=(30, 40), guide_shape=(60, 80))
    (2, 2)
    """
    d = target_meta.spatial_dims
    if guide_meta.spatial_dims != d:
        raise MismatchError(f"{guide_name}: the guide is {guide_meta.spatial_dims}D but the target is {d}D")
    if _georeferenced(target_meta) or _georeferenced(guide_meta):
        _check_crs(target_meta, guide_meta, guide_name)  # pixel sizes in two CRSs do not compare
        units = _units(target_meta)
        ratio = np.asarray(target_meta.spacing, float) / np.asarray(guide_meta.spacing, float)
        factors = np.round(ratio)
        what = f"pixel size {_sizes(guide_meta.spacing, units)}, the target's {_sizes(target_meta.spacing, units)}"
        exact = np.allclose(ratio, factors, rtol=_SPACING_RTOL)
    else:
        t_shape = np.asarray(tuple(target_shape)[-d:], float)
        g_shape = np.asarray(tuple(guide_shape)[-d:], float)
        factors = np.floor(g_shape / t_shape)
        what = f"{_sizes(g_shape, ' pixels')}, the target {_sizes(t_shape, ' pixels')} (no georeferencing)"
        exact = True
    if not exact or np.any(factors < 1) or factors.max() < 2:
        raise MismatchError(
            f"{guide_name}: {what}: a guide's pixels must be a whole number of times finer than the "
            "target's (at least 2): give a guide of the same scene on the output grid"
        )
    return tuple(int(f) for f in factors)


def check_guide_bands(
    expected: int, got: int | None, *, guide_name: str = "guide", names: Sequence[str] = ()
) -> None:
    """Refuse a guide that does not fit a model: a guide to a model without one, or a band count.

    Parameters
    ----------
    expected
        Guide bands the model was trained with (0: the model takes no guide).
    got
        Bands of the guide given (``None``: no guide given).
    guide_name
        How the message names the guide.
    names
        The model's guide band names, quoted in the message when known.

    Raises
    ------
    MismatchError
        One line saying what to give instead.

    Examples
    --------
    >>> check_guide_bands(4, 4)
    >>> check_guide_bands(0, None)
    """
    listing = f" ({', '.join(names)})" if names else ""
    if expected == 0 and got:
        raise MismatchError(
            f"{guide_name}: the model takes no guide: leave the guide out, or use a guided model"
        )
    if expected > 0 and not got:
        raise MismatchError(
            f"the model is guided: give it its guide, an image of {expected} band(s){listing} on the "
            "output grid (--guide GUIDE)"
        )
    if expected and got != expected:
        raise MismatchError(
            f"{guide_name}: the guide has {got} band(s) but the model was trained with {expected}{listing}: "
            "give a guide with the model's bands, in its order"
        )


# --------------------------------------------------------------------------- joined guides
GUIDE_INTERPOLATION = "linear"
"""How a coarser guide file is brought onto the finest guide's grid: (bi/tri)linear, as DSen2
upsamples its 20 m inputs for the 60 m model; local (one coarse pixel), so a window read with a
one-pixel margin gives the whole file's values."""


def upsample_guide(
    data: np.ndarray, valid: np.ndarray | None, factors: Sequence[int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """A coarser guide ``(G, *S)`` brought onto the finest guide's grid ``(G, *(S * factors))``.

    Field-of-view preserving :data:`GUIDE_INTERPOLATION`, edges replicated. Invalid pixels are
    filled with 0 first; an output pixel is valid where every coarse pixel it draws on is.

    Examples
    --------
    >>> up, valid = upsample_guide(np.array([[[0.0, 4.0]]]), None, (1, 2))
    >>> up.tolist(), valid
    ([[[0.0, 1.0, 3.0, 4.0]]], None)
    """
    from .baselines import upsample

    factors = tuple(int(f) for f in factors)
    if all(f == 1 for f in factors):
        return np.asarray(data, np.float32), valid
    filled = np.asarray(data, np.float64)
    if valid is not None:
        filled = np.where(valid[np.newaxis], filled, 0.0)
    up = upsample(filled, factors, convention="fov", method=GUIDE_INTERPOLATION).astype(np.float32)
    if valid is None:
        return up, None
    weight = upsample(
        valid[np.newaxis].astype(np.float64), factors, convention="fov", method=GUIDE_INTERPOLATION
    )
    return up, weight[0] > 1.0 - 1e-6


def guide_factor(finest: SpatialMeta, other: SpatialMeta, *, guide_name: str = "guide") -> tuple[int, ...]:
    """The whole factor per axis from ``other``'s pixel size to ``finest``'s (1 for the finest itself).

    Raises
    ------
    MismatchError
        When a pixel size of ``other`` is not a whole multiple of ``finest``'s (list guides finest first).
    """
    ratio = np.asarray(other.spacing, float) / np.asarray(finest.spacing, float)
    factors = np.round(ratio)
    if np.any(factors < 1) or not np.allclose(ratio, factors, rtol=_SPACING_RTOL):
        units = _units(finest)
        raise MismatchError(
            f"{guide_name}: pixel size {_sizes(other.spacing, units)} is not a whole multiple of the first "
            f"guide's {_sizes(finest.spacing, units)}: list the guide files finest first, on grids that "
            "share their corner"
        )
    return tuple(int(f) for f in factors)


def join_guides(guides: Sequence[Image]) -> Image:
    """Several guide images of one scene as one guide on the finest's grid (the first), bands concatenated.

    Each coarser guide is brought onto the first one's grid by :func:`upsample_guide` and cropped
    to its extent; the result keeps the first guide's metadata with every band name, and a pixel
    is valid where it is valid in every guide. The training sampler
    (:class:`~aesr_sci.data.source.PairSource`) joins guide files window by window with the same
    function, so training and inference see the same joined guide.

    Raises
    ------
    MismatchError
        As :func:`guide_factor`, or when a coarser guide does not cover the first one.

    Examples
    --------
    >>> a = Image(np.zeros((1, 4, 4), np.float32), SpatialMeta(np.eye(3), band_names=("B2",)))
    >>> b = Image(np.ones((2, 2, 2), np.float32), SpatialMeta(np.diag([2.0, 2.0, 1.0]), band_names=("B5", "B6")))
    >>> g = join_guides([a, b])
    >>> g.data.shape, g.meta.band_names
    ((3, 4, 4), ('B2', 'B5', 'B6'))
    """
    first = guides[0]
    if len(guides) == 1:
        return first
    shape = first.spatial_shape
    data, masks = [np.asarray(first.data, np.float32)], [first.common_mask]
    names = list(first.meta.band_names) or [""] * first.data.shape[0]
    for index, other in enumerate(guides[1:], start=2):
        factors = guide_factor(first.meta, other.meta, guide_name=f"guide {index}")
        up, valid = upsample_guide(np.asarray(other.data), other.common_mask, factors)
        if any(n < m for n, m in zip(up.shape[1:], shape)):
            raise MismatchError(
                f"guide {index}: covers {'x'.join(map(str, up.shape[1:]))} pixels of the first guide's grid, "
                f"not all of its {'x'.join(map(str, shape))}: give guides of the same extent"
            )
        region = tuple(slice(0, n) for n in shape)
        data.append(up[(slice(None), *region)])
        masks.append(None if valid is None else valid[region])
        names += list(other.meta.band_names) or [""] * other.data.shape[0]
    present = [m for m in masks if m is not None]
    mask = np.logical_and.reduce(present) if present else None
    meta = first.meta.replace(band_names=tuple(names) if all(names) else ())
    return Image(np.concatenate(data), meta, mask)


# ------------------------------------------------------------------------------- Wald pairs
def dsen2_sigma(scale: int | Sequence[int]) -> float:
    """DSen2's blur before the block means: a Gaussian of ``1 / s`` high-resolution pixels.

    For per-axis factors the largest one is used (the Gaussian of :class:`Degradation` has one
    sigma for every scaled axis).

    Examples
    --------
    >>> dsen2_sigma(2), round(dsen2_sigma([1, 1, 6]), 4)
    (0.5, 0.1667)
    """
    factors = as_int_scale(scale)
    return 1.0 / max(factors)


def wald_degrade(image: Image, scale: int | Sequence[int], *, method: str = "dsen2", **params: Any) -> Image:
    """Degrade an image by ``scale`` for Wald's protocol: the target and its guide alike.

    ``method="dsen2"`` is DSen2's degradation, :class:`~aesr_sci.data.degrade.Degradation`
    ``"gaussian"`` with ``sigma = 1 / s`` (:func:`dsen2_sigma`) followed by ``s x s`` block means;
    any other :data:`~aesr_sci.data.degrade.METHODS` name (with its parameters) is passed on, as a
    recipe's ``data.degradation`` is. The grid moves as :func:`~aesr_sci.data.degrade.degrade`
    defines (field-of-view preserving for every image-domain method).

    Examples
    --------
    >>> import numpy as np
    >>> img = Image(np.ones((1, 8, 8), np.float32), SpatialMeta(np.eye(3)))
    >>> wald_degrade(img, 2).meta.provenance["degradation"]["params"]
    {'sigma': 0.5}
    """
    from .data.degrade import degrade

    if method == "dsen2":
        method, params = "gaussian", {"sigma": dsen2_sigma(scale), **params}
    return degrade(image, scale=scale, method=method, **params)


def wald_triple(
    target: Image, guide: Image, scale: int | Sequence[int], *, method: str = "dsen2", **params: Any
) -> tuple[Image, Image, Image]:
    """The training triple of Wald's protocol: ``(degraded target, degraded guide, target)``.

    The target is cropped at its far end to a multiple of the scale and the guide to that times the
    scale (after :func:`check_guide` they share their corner), then both are degraded by
    :func:`wald_degrade`. The degraded guide lies on the target's grid, the degraded target on that
    grid divided by the scale, and the reference is the (cropped) target itself.

    Raises
    ------
    DataError
        If the guide's shape is not the target's times the scale (check it with :func:`check_guide`).
    """
    factors = check_guide_shape(target, guide, scale)
    kept = tuple(n - n % s for n, s in zip(target.spatial_shape, factors))
    gt = _crop(target, kept)
    guide = _crop(guide, tuple(n * s for n, s in zip(kept, factors)))
    return (
        wald_degrade(gt, factors, method=method, **params),
        wald_degrade(guide, factors, method=method, **params),
        gt,
    )


def check_guide_shape(target: Image, guide: Image, scale: int | Sequence[int]) -> tuple[int, ...]:
    """The scale per axis, once the guide's shape is checked to be the target's times the scale.

    Raises
    ------
    DataError
        If it is not (crop both with :func:`check_guide`'s windows first).
    """
    factors = as_int_scale(scale, target.spatial_dims)
    if guide.spatial_shape != tuple(n * s for n, s in zip(target.spatial_shape, factors)):
        raise DataError(
            f"the guide's shape {guide.spatial_shape} is not the target's {target.spatial_shape} times "
            f"the scale {list(factors)}: crop both with check_guide's windows first"
        )
    return factors


def _crop(image: Image, shape: tuple[int, ...]) -> Image:
    if image.spatial_shape == shape:
        return image
    region = tuple(slice(0, n) for n in shape)
    mask = None if image.mask is None else image.mask[(..., *region)]
    return Image(image.data[(slice(None), *region)], image.meta, mask)


def crop_to_guide(
    target: Image,
    guides: Sequence[Image],
    scale: int | Sequence[int],
    *,
    guide_names: Sequence[str] = (),
) -> tuple[Image, Image, GuideGrid]:
    """A target and its guide files (finest first) on one grid: checked, joined and cropped.

    The first guide is checked against the target by :func:`check_guide` (CRS, pixel size,
    corner); the guides are joined by :func:`join_guides` (as the training sampler joins them);
    both are cropped at the far end to the :class:`GuideGrid`'s windows, so the guide's shape is
    the target's times the scale.

    Returns
    -------
    tuple
        ``(target, guide, grid)``; ``grid.meta`` is the output's metadata.

    Raises
    ------
    MismatchError
        As :func:`check_guide` and :func:`join_guides`.
    """
    names = list(guide_names) or ["guide"]
    grid = check_guide(
        target.meta,
        guides[0].meta,
        scale,
        target_shape=target.spatial_shape,
        guide_shape=guides[0].spatial_shape,
        guide_name=names[0],
    )
    joined = join_guides(list(guides))
    target_shape = tuple(b for _, b in grid.target_window)
    return _crop(target, target_shape), _crop(joined, grid.shape), grid


# ------------------------------------------------------------------------- Sentinel-2 bands
S2_BANDS: dict[str, tuple[float, int]] = {
    "B1": (442.7, 60),
    "B2": (492.4, 10),
    "B3": (559.8, 10),
    "B4": (664.6, 10),
    "B5": (704.1, 20),
    "B6": (740.5, 20),
    "B7": (782.8, 20),
    "B8": (832.8, 10),
    "B8A": (864.7, 20),
    "B9": (945.1, 60),
    "B10": (1373.5, 60),
    "B11": (1613.7, 20),
    "B12": (2202.4, 20),
}
"""Sentinel-2 MSI bands: central wavelength (nm, Sentinel-2A) and native pixel size (m)."""

_BAND_RE = re.compile(r"(?<![A-Za-z0-9])B0?(8A|1[0-2]|[1-9])(?![A-Za-z0-9])", re.IGNORECASE)


def sentinel2_band(text: str) -> str | None:
    """The Sentinel-2 band named at the start of a band description, or ``None``.

    Accepts ``B2``, ``B02``, ``b8a``, ``B05 rededge1``, ``B8A nir-narrow``...

    Examples
    --------
    >>> [sentinel2_band(t) for t in ("B02", "B8A nir-narrow", "B05 rededge1", "b12", "NIR", "")]
    ['B2', 'B8A', 'B5', 'B12', None, None]
    """
    found = _BAND_RE.match(text.strip())
    return f"B{found.group(1).upper()}" if found else None


@dataclass(frozen=True)
class ProductBand:
    """One band of a Sentinel-2 product: its name, the file and band index it is read from."""

    name: str
    path: str
    index: int
    """0-based band index in ``path``."""

    @property
    def wavelength(self) -> float:
        """Central wavelength in nm."""
        return S2_BANDS[self.name][0]

    @property
    def resolution(self) -> int:
        """Native pixel size in metres (10, 20 or 60)."""
        return S2_BANDS[self.name][1]


def _file_bands(path: str, meta: SpatialMeta, count: int) -> list[str]:
    """Band names from the descriptions, else from the file name (``..._B05-B06-B8A.tif``)."""
    names = [sentinel2_band(d) for d in meta.band_names]
    if len(names) == count and all(names):
        return [n for n in names if n]
    from_name = [f"B{m.upper()}" for m in _BAND_RE.findall(Path(path).name)]
    if len(from_name) == count:
        return from_name
    unnamed = next(i for i, n in enumerate(names + [None] * count) if not n) + 1
    raise DataError(
        f"{path}: band {unnamed} is not named as a Sentinel-2 band (description "
        f"{(meta.band_names + ('',) * count)[unnamed - 1]!r}): set the band descriptions to B2, B3, ... "
        "(rasterio's set_band_description, or gdal_translate from a VRT), or name the bands in the file name"
    )


def sentinel2_bands(paths: Sequence[str | os.PathLike[str]]) -> tuple[ProductBand, ...]:
    """Identify the bands of a Sentinel-2 product's files; return them in wavelength order.

    Each band is named by its description (``B2``, ``B05 rededge1``, ``B8A``...), or, when the
    descriptions are missing, by the band names in the file name (``..._20m_B05-B06-B07-B8A-B11-B12.tif``).
    One file holds the bands of one native resolution.

    Raises
    ------
    DataError
        For a band that cannot be named, a band found twice, or a file that mixes resolutions.
    """
    from .io import read_meta

    found: dict[str, ProductBand] = {}
    for p in paths:
        path = str(p)
        meta, shape = read_meta(path)
        names = _file_bands(path, meta, shape[0])
        resolutions = sorted({S2_BANDS[n][1] for n in names})
        if len(resolutions) > 1:
            raise DataError(
                f"{path}: mixes bands of {' and '.join(f'{r} m' for r in resolutions)} "
                f"({', '.join(names)}): give one file per resolution"
            )
        for index, name in enumerate(names):
            if name in found:
                raise DataError(f"{path}: band {name} is also in {found[name].path}: give each band once")
            found[name] = ProductBand(name, path, index)
    return tuple(sorted(found.values(), key=lambda b: b.wavelength))


@dataclass(frozen=True)
class GuidedBands:
    """The targets and guides of one guided model, in the order the model takes them."""

    scale: int
    targets: tuple[ProductBand, ...]
    guides: tuple[ProductBand, ...]


def sentinel2_plan(bands: Sequence[ProductBand], scale: int) -> GuidedBands:
    """Which bands a Sentinel-2 guided model sharpens and which guide it.

    ``scale=2``: the 20 m bands (B5, B6, B7, B8A, B11, B12) guided by the 10 m bands (B2, B3, B4,
    B8), as ``recipes/sentinel2_guided_x2.yaml``. ``scale=6``: the 60 m bands (B1, B9 and B10 where
    present) guided by the 10 m and then the 20 m bands, as ``recipes/sentinel2_guided_x6.yaml``
    (whose guide files are listed 10 m first). Within one resolution the bands keep wavelength
    order, which is the order of the product's files. The 10 m bands themselves are copied.

    Raises
    ------
    DataError
        For another scale, or when a resolution the model needs is missing.

    Examples
    --------
    >>> bands = [ProductBand(n, f"{n}.tif", 0) for n in ("B2", "B3", "B4", "B8", "B5", "B11")]
    >>> plan = sentinel2_plan(bands, 2)
    >>> [b.name for b in plan.targets], [b.name for b in plan.guides]
    (['B5', 'B11'], ['B2', 'B3', 'B4', 'B8'])
    """
    roles = {2: (20, (10,)), 6: (60, (10, 20))}
    if scale not in roles:
        raise DataError(f"Sentinel-2 guided models upscale by 2 (20 m bands) or 6 (60 m bands), not {scale}")
    target_res, guide_res = roles[scale]
    ordered = sorted(bands, key=lambda b: (b.resolution, b.wavelength))
    targets = tuple(b for b in ordered if b.resolution == target_res)
    guides = tuple(b for b in ordered if b.resolution in guide_res)
    missing = [f"{r} m" for r in (target_res, *guide_res) if not any(b.resolution == r for b in ordered)]
    if missing:
        raise DataError(
            f"the x{scale} model needs the {' and '.join(missing)} band(s) of the product: add their file(s)"
        )
    return GuidedBands(scale=scale, targets=targets, guides=guides)
