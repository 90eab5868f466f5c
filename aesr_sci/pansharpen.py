"""Classical pansharpening baselines: a target sharpened with a guide on the guide's grid, no learning.

Both methods take a target ``(C, *S)`` and a guide ``(G, *(S * scale))`` (NumPy, 2D or 3D) and
return ``(C, *(S * scale))`` on the guide's grid, under the field-of-view preserving convention of
the rest of the package. Both fit how the target relates to the guide on the target's own grid,
by least squares against the guide degraded by the scale (the component-substitution recipe):

``hpf`` (high-pass filter injection, additive)
    ``out_c = up(target_c) + sum_g w_cg (guide_g - up(D(guide)_g))``: the guide's detail that the
    upsampling misses, in the units of each target band (``w_c`` regresses target band ``c`` on the
    degraded guide bands).
``brovey`` (weighted Brovey transform, multiplicative)
    ``out_c = up(target_c) * pan / intensity`` with ``pan`` a weighted sum of the guide bands and
    ``intensity = sum_c a_c up(target_c) + b`` regressed so that it matches the degraded ``pan`` (GDAL's
    weighted Brovey with weights fitted rather than given).

``up`` is the cubic-spline interpolation baseline of :func:`aesr_sci.baselines.upsample` and
``D`` the degradation (DSen2's by default, see :func:`aesr_sci.guide.wald_degrade`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import DataError
from .spatial import as_int_scale

__all__ = ["METHODS", "band_weights", "brovey", "hpf", "pansharpen"]

METHODS: tuple[str, ...] = ("hpf", "brovey")


def _check(target: np.ndarray, guide: np.ndarray, scale: Any) -> tuple[int, ...]:
    dims = target.ndim - 1
    if dims not in (2, 3) or guide.ndim != target.ndim:
        raise DataError(
            f"pansharpening takes (C, *S) arrays of 2 or 3 spatial axes, got target {target.shape} and "
            f"guide {guide.shape}"
        )
    factors = as_int_scale(scale, dims)
    expected = tuple(n * s for n, s in zip(target.shape[1:], factors))
    if tuple(guide.shape[1:]) != expected:
        raise DataError(
            f"the guide's spatial shape {tuple(guide.shape[1:])} is not the target's "
            f"{tuple(target.shape[1:])} times the scale {list(factors)} ({expected})"
        )
    return factors


def _degrade(guide: np.ndarray, factors: Sequence[int], degradation: Any) -> np.ndarray:
    import torch

    from .data.degrade import Degradation
    from .guide import dsen2_sigma

    if degradation is None:
        degradation = Degradation("gaussian", factors, {"sigma": dsen2_sigma(factors)})
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(guide, dtype=np.float64))[None]
        return degradation.apply(x)[0].numpy()


def _up(x: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    from .baselines import upsample as interpolate

    return interpolate(x, factors, convention="fov", method="cubic")


def band_weights(y: np.ndarray, x: np.ndarray, *, mask: np.ndarray | None = None) -> np.ndarray:
    """Least-squares weights of ``y ~ W x + b`` per band of ``y``, fitted over ``mask``.

    Parameters
    ----------
    y
        ``(C, *S)`` bands to explain.
    x
        ``(K, *S)`` explaining bands on the same grid.
    mask
        Boolean ``(*S)``, ``True`` where both are valid; default everywhere.

    Returns
    -------
    numpy.ndarray
        ``(C, K + 1)``: the weights of the ``K`` bands, then the intercept.

    Examples
    --------
    >>> x = np.random.default_rng(0).random((2, 8, 8))
    >>> np.round(band_weights(2 * x[:1] - x[1:] + 3, x), 6)
    array([[ 2., -1.,  3.]])
    """
    m = np.ones(y.shape[1:], bool) if mask is None else np.asarray(mask, bool)
    if m.sum() <= x.shape[0]:
        raise DataError(f"{int(m.sum())} valid pixels cannot fit {x.shape[0] + 1} weights per band")
    design = np.concatenate([x[:, m].T, np.ones((int(m.sum()), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, y[:, m].T.astype(np.float64), rcond=None)
    return solution.T


def _apply(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``W x + b`` for ``weights`` ``(C, K + 1)`` and ``x`` ``(K, *S)``."""
    return np.tensordot(weights[:, :-1], x, axes=(1, 0)) + weights[:, -1].reshape((-1,) + (1,) * (x.ndim - 1))


def hpf(
    target: np.ndarray,
    guide: np.ndarray,
    scale: int | Sequence[int],
    *,
    mask: np.ndarray | None = None,
    degradation: Any = None,
) -> np.ndarray:
    """High-pass filter injection: the upsampled target plus the guide's missing detail, per band.

    Parameters
    ----------
    target
        ``(C, *S)`` low-resolution bands.
    guide
        ``(G, *(S * scale))`` guide on the output grid.
    scale
        Integer factor, one or per spatial axis.
    mask
        Boolean ``(*S)``: target pixels used to fit the weights (default all).
    degradation
        A :class:`~aesr_sci.data.degrade.Degradation` taking the guide to the target's grid;
        default DSen2's (Gaussian of sigma ``1 / s`` then block means).

    Returns
    -------
    numpy.ndarray
        ``(C, *(S * scale))`` float64 on the guide's grid.

    Raises
    ------
    DataError
        If the shapes do not fit the scale, or too few pixels are valid to fit the weights.

    Examples
    --------
    >>> guide = np.random.default_rng(0).random((1, 16, 16))
    >>> target = guide.reshape(1, 8, 2, 8, 2).mean(axis=(2, 4))
    >>> hpf(target, guide, 2).shape
    (1, 16, 16)
    """
    factors = _check(target, guide, scale)
    low = _degrade(guide, factors, degradation)
    weights = band_weights(target, low, mask=mask)
    detail = guide - _up(low, factors)
    return _up(target, factors) + np.tensordot(weights[:, :-1], detail, axes=(1, 0))


def brovey(
    target: np.ndarray,
    guide: np.ndarray,
    scale: int | Sequence[int],
    *,
    guide_weights: Sequence[float] | None = None,
    mask: np.ndarray | None = None,
    degradation: Any = None,
    eps: float = 1e-6,
) -> np.ndarray:
    """Weighted Brovey transform: every upsampled band times the ratio of the pan to the intensity.

    ``pan`` is the weighted sum of the guide bands (``guide_weights``, default their mean); the
    intensity ``sum_c a_c up(target_c) + b`` uses weights regressed so that, on the target's grid,
    it matches the degraded pan. Where the intensity is within ``eps`` (relative to its mean
    magnitude) of zero the upsampled target is kept.

    Parameters
    ----------
    target, guide, scale, mask, degradation
        As :func:`hpf`.
    guide_weights
        One weight per guide band for the pan.
    eps
        Relative floor of the intensity.

    Returns
    -------
    numpy.ndarray
        ``(C, *(S * scale))`` float64 on the guide's grid.

    Examples
    --------
    >>> pan = 1 + np.random.default_rng(0).random((1, 16, 16))
    >>> target = np.concatenate([pan, 2 * pan]).reshape(2, 8, 2, 8, 2).mean(axis=(2, 4))
    >>> brovey(target, pan, 2).shape
    (2, 16, 16)
    """
    factors = _check(target, guide, scale)
    w = (
        np.full(guide.shape[0], 1.0 / guide.shape[0])
        if guide_weights is None
        else np.asarray(guide_weights, float)
    )
    if w.shape != (guide.shape[0],):
        raise DataError(f"guide_weights needs one weight per guide band ({guide.shape[0]}), got {len(w)}")
    pan = np.tensordot(w, guide, axes=(0, 0))[np.newaxis]
    a = band_weights(_degrade(pan, factors, degradation), target, mask=mask)
    up = _up(target, factors)
    intensity = _apply(a, up)
    floor = eps * max(float(np.abs(intensity).mean()), 1e-30)
    safe = np.abs(intensity) > floor
    ratio = np.where(safe, pan / np.where(safe, intensity, 1.0), 1.0)
    return up * ratio


def pansharpen(
    target: np.ndarray, guide: np.ndarray, scale: int | Sequence[int], *, method: str = "hpf", **options: Any
) -> np.ndarray:
    """Sharpen ``target`` with ``guide`` by one of :data:`METHODS` (see :func:`hpf`, :func:`brovey`).

    Raises
    ------
    DataError
        For an unknown method, or as the method does.
    """
    if method not in METHODS:
        raise DataError(f"unknown pansharpening method {method!r}: choose one of {', '.join(METHODS)}")
    return (hpf if method == "hpf" else brovey)(target, guide, scale, **options)
