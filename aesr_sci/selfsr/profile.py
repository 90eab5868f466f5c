"""Slice-profile estimation: the blur across the thick axis of a volume, measured from the volume itself.

A thick slice is the object seen through a slice profile (its width the slice thickness, its shape
set by the scanner's excitation pulse) and sampled every ``scale`` fine voxels. The in-plane axes
of the same volume see the same anatomy sharply. If anatomy is statistically isotropic, the
in-plane lines blurred by the true profile and decimated by the scale have the same power
spectrum as the lines across the slices (the assumption of SMORE/ECLARE and of ESPRESO's
estimator, here met by fitting spectra instead of training a GAN). :func:`estimate_profile`
tries each profile shape of the ``slice`` degradation (:data:`~aesr_sci.data.degrade.SLICE_PROFILES`)
over a range of widths and keeps the one that best makes the planes through the thick axis
isotropic (:class:`SliceProfile`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..data.degrade import SLICE_PROFILES, Degradation
from ..data.normalize import FOREGROUND_THRESHOLD, foreground_level, foreground_mask
from ..errors import DataError
from ..spatial import Image
from .geometry import SliceGeometry

__all__ = ["SliceProfile", "estimate_profile"]

logger = logging.getLogger(__name__)

_MIN_WINDOWS = 64  # fewer through-plane windows than this: the header's profile is used
_TIE = 0.25  # fits whose residuals differ by less than this fraction are taken as equally good
_OUTSIDE = -1e30  # the value of voxels outside the foreground: no window containing one counts
_WIDTHS = np.geomspace(0.25, 2.0, 29)  # candidate FWHMs, in units of the scale


@dataclass(frozen=True)
class SliceProfile:
    """A slice profile: shape and full width at half maximum, in fine (in-plane) voxels.

    Attributes
    ----------
    shape
        One of :data:`~aesr_sci.data.degrade.SLICE_PROFILES`.
    fwhm
        Full width at half maximum in fine voxels (a box's width).
    scale
        The integer factor across the thick axis.
    source
        ``"data"`` when estimated from the volume, ``"header"`` when taken from the voxel sizes
        (or the given thickness) because the volume had too few slices or too little foreground.
    residual
        Root mean square of the log ratio between the fitted and the measured through-plane spectra
        (``nan`` for a header profile): about 0.05 for a good fit.
    """

    shape: str
    fwhm: float
    scale: int
    source: str = "data"
    residual: float = math.nan

    def degradation(self, spatial_dims: int = 2, axis: int = 0) -> Degradation:
        """The ``slice`` degradation that blurs ``axis`` with this profile and decimates it by the scale.

        Examples
        --------
        >>> SliceProfile("box", 4.0, 4).degradation().to_dict()
        {'method': 'slice', 'scale': [4, 1], 'params': {'fwhm': 4.0, 'profile': 'box'}}
        """
        scale = [1] * spatial_dims
        scale[axis] = self.scale
        return Degradation("slice", tuple(scale), {"fwhm": float(self.fwhm), "profile": self.shape})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (for provenance and model.json)."""
        out = asdict(self)
        out["residual"] = None if math.isnan(self.residual) else float(self.residual)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SliceProfile:
        """Rebuild a profile from :meth:`to_dict` output."""
        residual = d.get("residual")
        return cls(
            str(d["shape"]),
            float(d["fwhm"]),
            int(d["scale"]),
            str(d.get("source", "data")),
            math.nan if residual is None else float(residual),
        )


def estimate_profile(
    image: Image,
    geometry: SliceGeometry,
    *,
    fwhm: float | None = None,
    shapes: Sequence[str] = SLICE_PROFILES,
    window: int = 16,
    max_planes: int = 32,
    foreground_threshold: float = FOREGROUND_THRESHOLD,
    seed: int = 0,
) -> SliceProfile:
    """Estimate the slice profile of a thick-slice volume from its data.

    Parameters
    ----------
    image
        The thick-slice volume ``(C, X, Y, Z)``.
    geometry
        Its thick axis and scale (:func:`~aesr_sci.selfsr.geometry.slice_geometry`).
    fwhm
        A known width in fine voxels (from a given slice thickness): only the shape is fitted.
        Default: the width is fitted too.
    shapes
        The profile shapes to try.
    window
        Length of the windows whose spectra are averaged, in thick slices (at most the slice count).
    max_planes
        Planes drawn at random along each in-plane axis (bounds the time: about a second).
    foreground_threshold
        Windows count when all their voxels are foreground: away from the background by this
        fraction of the robust range in some channel (:func:`~aesr_sci.data.normalize.foreground_level`).
    seed
        Seed of the plane draw.

    Returns
    -------
    SliceProfile
        The best fit, or the header's profile (a Gaussian of the slice thickness) when the volume
        has fewer than 8 slices or too little foreground, or every shape's best width lies at an
        end of the range tried (a quarter to twice the scale).

    Raises
    ------
    DataError
        If the image is not a volume with a thick axis, or a shape is unknown.
    """
    if geometry.axis is None or image.spatial_dims != 3:
        raise DataError("a slice profile needs a 3D volume with a thick axis (see slice_geometry)")
    unknown = [s for s in shapes if s not in SLICE_PROFILES]
    if unknown or not shapes:
        raise DataError(f"unknown slice profile(s) {unknown}: use some of {', '.join(SLICE_PROFILES)}")
    header = SliceProfile("gaussian", float(fwhm or geometry.fwhm), geometry.scale, "header")
    planes, level = _planes(image, geometry, max_planes=max_planes, seed=seed, threshold=foreground_threshold)
    window = min(int(window), image.spatial_shape[geometry.axis]) // 2 * 2  # type: ignore[index]
    widths = [float(fwhm)] if fwhm is not None else list(_WIDTHS * geometry.scale)
    best = header

    def cost(shape: str, width: float) -> float:
        return _asymmetry(planes, SliceProfile(shape, width, geometry.scale), level, window)

    fits = []
    for shape in shapes:
        costs = [cost(shape, w) for w in widths]
        k = int(np.argmin(costs))
        if not np.isfinite(costs[k]) or (len(widths) > 1 and k in (0, len(widths) - 1)):
            continue  # no fit, or one at the end of the range: not a measurement
        width, residual = _refine(widths, costs, k), costs[k]
        if width != widths[k]:
            residual = min(residual, cost(shape, width))
            width = width if residual < costs[k] else widths[k]
        fits.append(SliceProfile(shape, width, geometry.scale, "data", residual))
    if fits:
        # Shapes of equal blur fit about equally well: among those within the tie margin of the
        # best, the one whose FWHM is nearest the header's slice thickness wins.
        lowest = min(f.residual for f in fits)
        close = [f for f in fits if f.residual <= lowest * (1.0 + _TIE)]
        best = min(close, key=lambda f: abs(math.log(f.fwhm / header.fwhm)))
    if best.source == "header":
        logger.info("the slice profile could not be measured from the data: using %s", header)
    else:
        logger.info("slice profile: %s", best)
    return best


def _planes(
    image: Image, geometry: SliceGeometry, *, max_planes: int, seed: int, threshold: float
) -> tuple[list[np.ndarray], float]:
    """Per in-plane axis ``a``, a batch ``(N, C, A, T)`` of planes containing ``a`` and the thick axis,
    and the level below which a blurred value has touched a voxel outside the foreground.

    ``A`` is cropped to a multiple of the scale; nodata and background voxels (not
    :func:`~aesr_sci.data.normalize.foreground_mask`) are set to ``_OUTSIDE``.
    """
    axis, s = int(geometry.axis), geometry.scale  # type: ignore[arg-type]
    data = np.asarray(image.data, dtype=np.float32)
    valid = image.common_mask
    fg = foreground_mask(data, valid, foreground_level(data, valid, threshold=threshold))
    assert fg is not None  # a level is given
    inside = data[:, fg] if fg.any() else np.zeros((1, 1), np.float32)
    lo, hi = float(inside.min()), float(inside.max())
    data = np.where(fg[None], data, np.float32(_OUTSIDE))
    rng = np.random.default_rng(seed)
    out = []
    for a in geometry.in_plane:
        other = 3 - a - axis
        planes = np.moveaxis(data, (1 + other, 1 + a, 1 + axis), (0, 2, 3))  # (N, C, A, T)
        planes = planes[:, :, : planes.shape[2] - planes.shape[2] % s]
        pick = np.sort(rng.choice(len(planes), size=min(len(planes), max_planes), replace=False))
        out.append(np.ascontiguousarray(planes[pick], dtype=np.float64))
    return out, lo - (hi - lo) - 1.0  # below every foreground value, far above any touched by _OUTSIDE


def _asymmetry(planes: list[np.ndarray], profile: SliceProfile, level: float, window: int) -> float:
    """How far a candidate profile leaves the planes from isotropic: RMS log ratio of two spectra.

    Each plane, blurred along its in-plane axis by the candidate and decimated by the scale, has
    the thick axis's sampling along both axes; with the true profile its power spectrum along the
    in-plane axis equals the one along the thick axis (noise included: white noise is blurred the
    same way along both). A free gain absorbs a contrast difference between the axes. ``inf``
    when too few all-foreground windows remain.
    """
    along_a, along_t = [], []
    for batch in planes:
        low = np.einsum("ka,ncat->nckt", _operator(profile, batch.shape[2]), batch, optimize=True)
        low = low.reshape(-1, *low.shape[2:])  # (N C, A / s, T)
        along_a.append(np.moveaxis(low, 1, 2).reshape(-1, low.shape[1]))
        along_t.append(low.reshape(-1, low.shape[2]))
    spectra = [_spectrum(lines, level, window) for lines in (along_a, along_t)]
    if spectra[0] is None or spectra[1] is None:
        return math.inf
    log_ratio = np.log(spectra[0] / spectra[1])
    return float(np.sqrt(np.mean((log_ratio - log_ratio.mean()) ** 2)))


def _operator(profile: SliceProfile, n: int) -> np.ndarray:
    """The profile's ``slice`` degradation of a line of ``n`` voxels as an ``(n / scale, n)`` matrix.

    One matrix product per plane batch is many times faster than strided convolutions of small
    tensors on a busy machine.
    """
    eye = torch.eye(n, dtype=torch.float64)[:, None]
    with torch.no_grad():
        return profile.degradation(spatial_dims=1).apply(eye)[:, 0].numpy().T.copy()


def _spectrum(batches: list[np.ndarray], level: float, window: int) -> np.ndarray | None:
    """Mean Hann-windowed power spectrum (DC excluded) of the windows above ``level`` of batches of lines."""
    segments = []
    for lines in batches:
        starts = range(0, lines.shape[-1] - window + 1, max(window // 2, 1))
        segments += [lines[(lines[:, a : a + window] > level).all(1), a : a + window] for a in starts]
    if window < 8 or sum(len(x) for x in segments) < _MIN_WINDOWS:
        return None
    stacked = np.concatenate(segments)
    stacked = stacked - stacked.mean(1, keepdims=True)
    power = np.abs(np.fft.rfft(stacked * np.hanning(window + 2)[1:-1], axis=1)) ** 2
    return power.mean(0)[1:] + 1e-30


def _refine(widths: Sequence[float], costs: Sequence[float], k: int) -> float:
    """The minimum of the parabola through the best grid point and its neighbours (in log width)."""
    if k == 0 or k == len(widths) - 1 or not np.all(np.isfinite(costs[k - 1 : k + 2])):
        return float(widths[k])
    x = np.log(np.asarray(widths[k - 1 : k + 2]))
    y = np.asarray(costs[k - 1 : k + 2])
    denom = (x[0] - x[1]) * (x[0] - x[2]) * (x[1] - x[2])
    a = (x[2] * (y[1] - y[0]) + x[1] * (y[0] - y[2]) + x[0] * (y[2] - y[1])) / denom
    b = (x[2] ** 2 * (y[0] - y[1]) + x[1] ** 2 * (y[2] - y[0]) + x[0] ** 2 * (y[1] - y[2])) / denom
    if a <= 0:
        return float(widths[k])
    return float(np.exp(np.clip(-b / (2 * a), x[0], x[2])))
