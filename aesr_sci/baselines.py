"""Interpolation baselines on exactly the grid a model's outputs use: nearest, linear, cubic, Lanczos, Fourier.

High-resolution index ``j`` sits at low-resolution coordinate ``(j + 0.5) / s - 0.5`` under the
field-of-view preserving convention and at ``j / s`` under the origin preserving one (see
:mod:`aesr_sci.spatial`). A baseline half a voxel off would be a bug, not a weak baseline; the tests
check the positions. The networks' own trainable skip, :func:`aesr_sci.nets.blocks.interpolate`, is a
different thing: torch, differentiable, linear only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ParameterError
from .spatial import as_scale, check_convention

__all__ = ["BASELINES", "upsample"]

BASELINES = ("nearest", "linear", "cubic", "lanczos", "fourier")
"""The baselines, in the order reports list them."""


def _positions(n_out: int, s: float, convention: str) -> np.ndarray:
    j = np.arange(n_out, dtype=np.float64)
    return (j + 0.5) / s - 0.5 if convention == "fov" else j / s


def _kernel_matrix(n_in: int, n_out: int, s: float, convention: str, method: str) -> np.ndarray:
    """A ``(n_out, n_in)`` resampling matrix for one axis, edges clamped (replicated)."""
    x = _positions(n_out, s, convention)
    if method == "nearest":
        idx = np.clip(np.floor(x + 0.5).astype(int), 0, n_in - 1)
        m = np.zeros((n_out, n_in))
        m[np.arange(n_out), idx] = 1.0
        return m
    if method == "linear":
        support, kernel = 1, lambda t: np.clip(1 - np.abs(t), 0, None)
    elif method == "lanczos":
        a = 3

        def kernel(t: np.ndarray) -> np.ndarray:
            return np.where(np.abs(t) < a, np.sinc(t) * np.sinc(t / a), 0.0)

        support = a
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(method)
    base = np.floor(x).astype(int)
    m = np.zeros((n_out, n_in))
    for k in range(-support + 1, support + 1):
        idx = base + k
        w = kernel(x - idx)
        np.add.at(m, (np.arange(n_out), np.clip(idx, 0, n_in - 1)), w)
    return m / m.sum(axis=1, keepdims=True)


def _fourier(lq: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """Zero-filled Fourier interpolation over the spatial axes of ``(C, *S)`` (origin convention)."""
    x = lq.astype(np.float64)
    for ax, m in enumerate(out_shape, start=1):
        n = x.shape[ax]
        if m == n:
            continue
        spec = np.fft.fftshift(np.fft.fft(x, axis=ax), axes=ax)
        if n % 2 == 0:  # split the shared Nyquist bin symmetrically so the result stays real
            nyq = [slice(None)] * x.ndim
            nyq[ax] = slice(0, 1)
            half = spec[tuple(nyq)] / 2
            spec = np.concatenate([half, spec[tuple(_sl(ax, 1, None, x.ndim))], half], axis=ax)
            n_eff = n + 1
        else:
            n_eff = n
        pad = [(0, 0)] * x.ndim
        start = m // 2 - n_eff // 2
        pad[ax] = (start, m - n_eff - start)
        spec = np.pad(spec, pad)
        x = np.real(np.fft.ifft(np.fft.ifftshift(spec, axes=ax), axis=ax)) * (m / n)
    return x


def _sl(ax: int, start: int | None, stop: int | None, ndim: int) -> list[slice]:
    out = [slice(None)] * ndim
    out[ax] = slice(start, stop)
    return out


def upsample(
    lq: np.ndarray, scale: float | Sequence[float], *, convention: str = "fov", method: str = "cubic"
) -> np.ndarray:
    """Upsample a channel-first array ``(C, *S)`` onto the model's high-resolution grid.

    Parameters
    ----------
    lq
        Low-resolution array, channels first.
    scale
        Integer factor, one or per spatial axis.
    convention
        ``"fov"`` or ``"origin"`` (see :mod:`aesr_sci.spatial`).
    method
        ``nearest``, ``linear``, ``cubic`` (cubic B-spline, scipy), ``lanczos`` (Lanczos-3) or
        ``fourier`` (zero-filled DFT; the natural baseline for k-space truncated data, which uses the
        origin convention).

    Returns
    -------
    numpy.ndarray
        ``(C, *S * scale)`` float64.

    Raises
    ------
    ParameterError
        For an unknown method or convention, or a scale that is not one positive factor per axis.

    Examples
    --------
    >>> import numpy as np
    >>> upsample(np.array([[0.0, 1.0]]), 2, convention="origin", method="linear")
    array([[0. , 0.5, 1. , 1. ]])
    """
    from scipy import ndimage

    if method not in BASELINES:
        raise ParameterError(f"unknown baseline {method!r}: choose one of {', '.join(BASELINES)}")
    check_convention(convention)
    dims = lq.ndim - 1
    factors = as_scale(scale, dims)
    out_shape = [round(n * s) for n, s in zip(lq.shape[1:], factors)]
    if method == "fourier":
        return _fourier(lq, out_shape)
    x = lq.astype(np.float64)
    if method == "cubic":
        offset = [0.5 / s - 0.5 if convention == "fov" else 0.0 for s in factors]
        return np.stack(
            [
                ndimage.affine_transform(
                    c,
                    [1.0 / s for s in factors],
                    offset=offset,
                    output_shape=out_shape,
                    order=3,
                    mode="nearest",
                )
                for c in x
            ]
        )
    for ax, (m, s) in enumerate(zip(out_shape, factors), start=1):
        if s == 1:
            continue
        w = _kernel_matrix(x.shape[ax], m, s, convention, method)
        x = np.moveaxis(np.tensordot(w, np.moveaxis(x, ax, 0), axes=(1, 0)), 0, ax)
    return x
