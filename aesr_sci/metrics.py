"""Masked image-quality metrics: PSNR, SSIM and high-frequency energy, with shape checks.

Arrays are compared as given; a mask (``True`` = scored) restricts every metric to the foreground
or valid pixels. As in :mod:`skimage.metrics`, arrays of different shapes are refused with both
shapes in the message (:class:`aesr_sci.errors.ShapeError`, a ``ValueError``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ShapeError

__all__ = ["check_shapes", "psnr", "reference_range", "rmse", "score", "sharpness", "spectral_angle", "ssim"]


def check_shapes(reference: np.ndarray, test: np.ndarray | None = None, mask: Any = None) -> np.ndarray:
    """The scored-voxel mask for ``reference`` (all ``True`` when ``mask`` is None), after checking
    that ``test`` and ``mask`` have the reference's shape.

    Raises
    ------
    ShapeError
        Naming both shapes.

    Examples
    --------
    >>> check_shapes(np.zeros((2, 3)), np.zeros((2, 3))).all()
    np.True_
    """
    shape = tuple(np.shape(reference))
    if test is not None and tuple(np.shape(test)) != shape:
        raise ShapeError(
            f"the images have different shapes: reference {shape}, test {tuple(np.shape(test))}; "
            "compare arrays on the same grid"
        )
    if mask is None:
        return np.ones(shape, dtype=bool)
    if tuple(np.shape(mask)) != shape:
        raise ShapeError(
            f"the mask has shape {tuple(np.shape(mask))} but the image has shape {shape}: "
            "give one mask value per voxel"
        )
    return np.asarray(mask, dtype=bool)


def _masked_mse(reference: np.ndarray, test: np.ndarray, mask: Any) -> tuple[float, np.ndarray]:
    """Mean squared error over the scored voxels (NaN when there are none) and their mask."""
    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    m = check_shapes(reference, test, mask)
    mse = float(np.mean((reference[m] - test[m]) ** 2)) if m.any() else float("nan")
    return mse, m


def _data_range(ref: np.ndarray, mask: np.ndarray) -> float:
    vals = ref[mask]
    rng = float(vals.max() - vals.min()) if vals.size else 0.0
    return rng if rng > 0 else 1.0


def reference_range(reference: np.ndarray, mask: np.ndarray) -> float:
    """The PSNR peak of a ``(C, *S)`` reference: the range of the channels' maximum inside ``mask``."""
    return _data_range(np.asarray(reference).max(axis=0), check_shapes(reference[0], None, mask))


def psnr(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    data_range: float | None = None,
) -> float:
    """Peak signal-to-noise ratio over ``mask`` (``True`` = scored), in dB.

    ``data_range`` defaults to the reference's range inside the mask.

    Raises
    ------
    ShapeError
        If ``test`` or ``mask`` does not have the reference's shape.

    Examples
    --------
    >>> import numpy as np
    >>> round(psnr(np.array([0.0, 1.0]), np.array([0.1, 1.0])), 2)
    23.01
    """
    reference = np.asarray(reference, dtype=np.float64)
    mse, m = _masked_mse(reference, test, mask)
    if not m.any():
        return float("nan")
    dr = data_range if data_range is not None else _data_range(reference, m)
    return float("inf") if mse == 0 else 10.0 * math.log10(dr * dr / mse)


def ssim(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    data_range: float | None = None,
) -> float:
    """Structural similarity (scikit-image), averaged over ``mask``, for 2D or 3D arrays.

    Raises
    ------
    ShapeError
        If ``test`` or ``mask`` does not have the reference's shape.
    """
    from skimage.metrics import structural_similarity

    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    m = check_shapes(reference, test, mask)
    if not m.any():
        return float("nan")
    dr = data_range if data_range is not None else _data_range(reference, m)
    win = min(7, *[n if n % 2 else n - 1 for n in reference.shape])
    if win < 3:
        return float("nan")
    _, smap = structural_similarity(reference, test, data_range=dr, full=True, win_size=win)
    return float(smap[m].mean())


def sharpness(image: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """High-frequency energy: the mean squared Laplacian over ``mask`` (2D or 3D array).

    Raises
    ------
    ShapeError
        If ``mask`` does not have the image's shape.
    """
    from scipy import ndimage

    lap = ndimage.laplace(np.asarray(image, dtype=np.float64), mode="nearest")
    m = check_shapes(lap, None, mask)
    return float(np.mean(lap[m] ** 2)) if m.any() else float("nan")


def score(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    data_range: float | None = None,
) -> dict[str, Any]:
    """PSNR, SSIM and high-frequency energy of ``(C, *S)`` arrays: means over channels, and per channel.

    ``hf_energy_ratio`` is the test's :func:`sharpness` over the reference's: 1 means as much fine
    detail as the reference, interpolation stays below 1 and over-sharpening goes above.

    Raises
    ------
    ShapeError
        If ``test`` does not have the reference's shape or ``mask`` its spatial shape.
    """
    check_shapes(reference, test)
    per_psnr = [psnr(r, t, mask=mask, data_range=data_range) for r, t in zip(reference, test)]
    per_ssim = [ssim(r, t, mask=mask, data_range=data_range) for r, t in zip(reference, test)]
    hf = [sharpness(t, mask=mask) / max(sharpness(r, mask=mask), 1e-30) for r, t in zip(reference, test)]
    return {
        "hf_energy_ratio": float(np.mean(hf)),
        "psnr": float(np.mean(per_psnr)),
        "ssim": float(np.mean(per_ssim)),
        "psnr_per_band": per_psnr,
        "ssim_per_band": per_ssim,
    }


# ----------------------------------------------------------------- guided super-resolution metrics
def rmse(reference: np.ndarray, test: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """Root-mean-square error over ``mask`` (``True`` = scored), in the data's units.

    DSen2 and SEN2SR report it on reflectance x 10000 (digital numbers).

    Raises
    ------
    ShapeError
        If the shapes differ.

    Examples
    --------
    >>> rmse(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 5.0]))
    1.7320508075688772
    """
    mse, m = _masked_mse(reference, test, mask)
    return float(np.sqrt(mse)) if m.any() else float("nan")


def spectral_angle(reference: np.ndarray, test: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """Spectral angle mapper (SAM): the mean angle between the spectra of each pixel, in degrees.

    Parameters
    ----------
    reference, test
        ``(C, *S)`` arrays, bands first.
    mask
        Boolean ``(*S)``, ``True`` where scored; pixels where either spectrum is zero are skipped.

    Returns
    -------
    float
        0 for identical spectra (or spectra scaled by a positive factor), 90 for orthogonal ones;
        NaN when no pixel is scored.

    Raises
    ------
    ShapeError
        If the shapes differ or the arrays have no band axis.

    Examples
    --------
    >>> a = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> spectral_angle(a, 3 * a), spectral_angle(a, a[::-1])
    (0.0, 90.0)
    """
    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if reference.ndim < 2:
        raise ShapeError(f"spectral_angle needs (C, *S) arrays with a band axis, got shape {reference.shape}")
    check_shapes(reference, test)
    m = check_shapes(reference[0], mask=mask)
    dot = np.sum(reference * test, axis=0)
    norms = np.linalg.norm(reference, axis=0) * np.linalg.norm(test, axis=0)
    m = m & (norms > 0)
    if not m.any():
        return float("nan")
    cosine = np.clip(dot[m] / norms[m], -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)).mean())
