"""Degradation models: the linear operators that turn a high-resolution image into its low-resolution twin.

A :class:`Degradation` is a small frozen value (method, per-axis integer scale, parameters) that is
stored in every checkpoint, so that inference knows which grid convention its outputs use. Its
:meth:`Degradation.apply` is the *linear* operator ``D`` written in torch (differentiable, so the
adjoint ``D^T`` is available through autograd), mapping a batch ``(N, C, *S)`` to
``(N, C, *S / scale)``. Noise is separate (:func:`add_noise`), and :func:`degrade` applies the whole
model to an :class:`~aesr_sci.spatial.Image`, moving its grid correctly.

Methods
-------
``kspace`` (MRI, grid convention ``"origin"``)
    Keep the central ``1 / s`` of the discrete Fourier spectrum along each scaled axis and return to
    the image domain on the smaller grid, with intensities preserved. For an even low-resolution size
    the Nyquist frequency is shared by the two halves of the spectrum and is split symmetrically, so a
    real input gives a real output. The result equals the band-limited original sampled at high-res
    indices ``j * s``: the first voxel centre stays put.
``slice`` (thick-slice MRI, ``"fov"``)
    A slice profile whose full width at half maximum equals the slice thickness (``s * (1 - gap)``
    high-resolution voxels unless ``fwhm`` is given), centred on each low-resolution voxel
    (high-res index ``k * s + (s - 1) / 2``), then decimation. The profile is a Gaussian, or with
    ``profile="box"`` a rectangle of that width integrated over each high-resolution voxel (a
    contiguous box of width ``s`` is the block mean).
``gaussian`` (satellite and general, ``"fov"``)
    A Gaussian blur per band followed by block means. The default ``sigma = s * sqrt(-2 ln 0.3) / pi
    ~= 0.494 s`` high-resolution pixels puts the blur's modulation transfer function,
    ``exp(-2 pi^2 sigma^2 f^2)``, at 0.3 at the low-resolution Nyquist frequency ``f = 1 / (2 s)``
    cycles per high-resolution pixel (the block mean lowers it further).
``area`` (``"fov"``)
    Block means.
``bicubic`` (``"fov"``)
    Antialiased bicubic downsampling: Keys' cubic kernel (``a = -0.5``) stretched by ``s``, weights
    renormalised at the borders. In 2D it matches ``torch.nn.functional.interpolate(mode="bicubic",
    antialias=True)``; in 3D it is the separable equivalent.

All the image-domain methods are one separable strided convolution per scaled axis, whose taps are a
profile evaluated at the high-resolution offsets from each low-resolution voxel centre (which handles
the half-integer centres of even factors exactly), normalised to sum to one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError, RecipeError
from ..spatial import METHODS, Image, as_int_scale, per_axis

__all__ = [
    "METHODS",
    "PARAMS",
    "SLICE_PROFILES",
    "Degradation",
    "add_noise",
    "default_sigma",
    "degrade",
]

logger = logging.getLogger(__name__)

PARAMS: dict[str, tuple[str, ...]] = {
    "kspace": (),
    "slice": ("fwhm", "gap", "sigma_jitter", "profile"),
    "gaussian": ("sigma", "sigma_jitter"),
    "area": (),
    "bicubic": (),
}
"""The parameters each method accepts."""

SLICE_PROFILES: tuple[str, ...] = ("gaussian", "box")
"""The slice-profile shapes of the ``slice`` method."""

_MTF_AT_NYQUIST = 0.3
_GAUSS_TRUNCATE = 4.0  # kernel radius in standard deviations (as scipy.ndimage)
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_INFO_KEYS = ("convention", "noise", "crop")  # extra keys found in provenance, ignored by from_dict


def default_sigma(scale: int) -> float:
    """Gaussian sigma (high-resolution pixels) whose MTF is 0.3 at the low-resolution Nyquist frequency.

    The MTF of a Gaussian of standard deviation ``sigma`` is ``exp(-2 pi^2 sigma^2 f^2)``; solving
    ``MTF(1 / (2 s)) = 0.3`` gives ``sigma = s * sqrt(-2 ln 0.3) / pi ~= 0.494 s``.

    Examples
    --------
    >>> round(default_sigma(2), 3)
    0.988
    """
    return float(scale) * math.sqrt(-2.0 * math.log(_MTF_AT_NYQUIST)) / math.pi


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise RecipeError(f"degradation parameter {name} must be a number {bound} (got {value!r})")


def _check_fraction(name: str, value: Any) -> float:
    """``value`` as a float, refused unless it is a number in ``[0, 1)``."""
    _check_positive(name, value, allow_zero=True)
    if value >= 1:
        raise RecipeError(f"degradation parameter {name} must be in [0, 1) (got {value!r})")
    return float(value)


def _check_sigma(sigma: Any) -> float | list[float]:
    """A blur width, or one per band, as floats, each refused unless > 0."""
    if isinstance(sigma, (list, tuple, np.ndarray)):
        sigmas = [float(v) for v in sigma]
        for v in sigmas:
            _check_positive("sigma", v)
        return sigmas
    _check_positive("sigma", sigma)
    return float(sigma)


def _checked_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` of ``method`` with their numbers as floats; an unknown name or an invalid value
    raises a RecipeError that lists the valid ones."""
    valid = PARAMS[method]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        allowed = ", ".join(valid) if valid else "none"
        raise RecipeError(
            f"degradation method {method!r} does not take parameter(s) {', '.join(unknown)}; "
            f"its parameters are: {allowed}"
        )
    if "sigma" in params:
        params["sigma"] = _check_sigma(params["sigma"])
    if "fwhm" in params:
        _check_positive("fwhm", params["fwhm"])
        params["fwhm"] = float(params["fwhm"])
    if "gap" in params:
        params["gap"] = _check_fraction("gap", params["gap"])
    if params.get("profile", "gaussian") not in SLICE_PROFILES:
        raise RecipeError(
            f"unknown slice profile {params['profile']!r}: use one of {', '.join(SLICE_PROFILES)}"
        )
    if "sigma_jitter" in params:
        params["sigma_jitter"] = _check_fraction("sigma_jitter", params["sigma_jitter"])
    return params


@dataclass(frozen=True)
class Degradation:
    """A degradation model: method, integer downsampling factor per spatial axis, parameters.

    Parameters
    ----------
    method
        One of :data:`aesr_sci.spatial.METHODS`.
    scale
        Downsampling factor per spatial axis, e.g. ``(2, 2, 2)`` or ``(1, 1, 4)`` for through-plane.
        A single number applies to every axis of whatever is degraded.
    params
        Method parameters (see :data:`PARAMS`):

        ``sigma`` (gaussian)
            blur standard deviation in high-resolution pixels, one number or one per band;
            default :func:`default_sigma`. Applied along the scaled axes only.
        ``fwhm`` (slice)
            slice-profile full width at half maximum in high-resolution voxels; default the slice
            thickness ``s * (1 - gap)``.
        ``gap`` (slice)
            gap between slices as a fraction of a slice, in ``[0, 1)``; default 0.
        ``profile`` (slice)
            the profile's shape, one of :data:`SLICE_PROFILES`; default ``"gaussian"``.
        ``sigma_jitter`` (gaussian, slice)
            relative random change of the blur width for training, e.g. 0.2 for +-20%; see
            :meth:`randomized`. :meth:`apply` itself is deterministic.

    Raises
    ------
    RecipeError
        For an unknown method or parameter, or an invalid value (the message lists the valid ones).
    ParameterError
        For a scale that is not whole numbers of at least 1.

    Examples
    --------
    >>> deg = Degradation("gaussian", (2, 2))
    >>> deg.convention
    'fov'
    >>> Degradation.from_dict(deg.to_dict()) == deg
    True
    >>> import torch
    >>> deg.apply(torch.ones(1, 3, 8, 8)).shape
    torch.Size([1, 3, 4, 4])
    """

    method: str
    scale: tuple[int, ...]
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise RecipeError(f"unknown degradation method {self.method!r}: use one of {', '.join(METHODS)}")
        object.__setattr__(self, "scale", as_int_scale(self.scale, name="degradation scale"))
        object.__setattr__(self, "params", _checked_params(self.method, dict(self.params or {})))

    # ----------------------------------------------------------------------------- description
    @property
    def convention(self) -> str:
        """Grid convention of the low-resolution grid: ``"origin"`` for kspace, ``"fov"`` otherwise."""
        return METHODS[self.method].convention

    def scale_for(self, spatial_dims: int) -> tuple[int, ...]:
        """The factor per axis for data with ``spatial_dims`` spatial axes.

        Raises
        ------
        DataError
            If the degradation has a different number of factors.
        """
        if len(self.scale) == 1:
            return self.scale * spatial_dims
        if len(self.scale) != spatial_dims:
            raise DataError(
                f"the degradation has {len(self.scale)} scale factors {list(self.scale)} but the data has "
                f"{spatial_dims} spatial axes: give one factor per axis"
            )
        return self.scale

    @property
    def nominal_params(self) -> dict[str, Any]:
        """The parameters without training-time randomisation (``sigma_jitter``): for validation,
        evaluation and inference, which must be deterministic."""
        return {k: v for k, v in self.params.items() if k != "sigma_jitter"}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, stored in checkpoints and provenance."""
        return {"method": self.method, "scale": list(self.scale), "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Degradation:
        """Rebuild a degradation from :meth:`to_dict` output (or a provenance entry).

        Raises
        ------
        RecipeError
            For unknown keys, a missing method or scale, or a grid convention that contradicts the method.
        """
        if not isinstance(d, Mapping):
            raise RecipeError(f"a degradation must be a mapping with method, scale, params (got {d!r})")
        allowed = ("method", "scale", "params", *_INFO_KEYS)
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise RecipeError(
                f"unknown degradation key(s) {', '.join(unknown)}: valid keys are method, scale, params"
            )
        missing = [k for k in ("method", "scale") if k not in d]
        if missing:
            raise RecipeError(f"degradation is missing {', '.join(missing)}")
        deg = cls(d["method"], d["scale"], dict(d.get("params") or {}))
        if "convention" in d and d["convention"] != deg.convention:
            raise RecipeError(
                f"degradation {deg.method!r} uses the {deg.convention!r} grid convention, "
                f"not {d['convention']!r}"
            )
        return deg

    def randomized(self, rng: np.random.Generator | int | None = None) -> Degradation:
        """A copy with the blur width drawn at random within ``sigma_jitter`` (itself removed).

        ``sigma`` (gaussian) or ``fwhm`` (slice) is multiplied by a factor drawn uniformly in
        ``[1 - sigma_jitter, 1 + sigma_jitter]`` (one factor for all bands). Without jitter the
        degradation itself is returned.
        """
        jitter = float(self.params.get("sigma_jitter", 0.0))
        if jitter == 0.0:
            return self
        rng = np.random.default_rng(rng)
        factor = float(rng.uniform(1.0 - jitter, 1.0 + jitter))
        params = {k: v for k, v in self.params.items() if k != "sigma_jitter"}
        scaled = [s for s in self.scale if s > 1] or [1]
        if self.method == "gaussian":
            sigma = params.get("sigma", default_sigma(max(scaled)))
            if isinstance(sigma, list):
                params["sigma"] = [v * factor for v in sigma]
            else:
                params["sigma"] = sigma * factor
        else:  # slice
            fwhm = params.get("fwhm", max(scaled) * (1.0 - params.get("gap", 0.0)))
            params["fwhm"] = fwhm * factor
            params.pop("gap", None)
        return Degradation(self.method, self.scale, params)

    # ----------------------------------------------------------------------------- operators
    def support_radius(self, spatial_dims: int) -> tuple[int, ...]:
        """High-resolution voxels beyond a low-resolution voxel's own block that influence it, per axis.

        A crop with this margin on each side (rounded up to a multiple of the scale) degrades to
        exactly the same values as the whole image, away from the crop's edges. Infinite for kspace
        (reported as ``-1``): its truncation is not local.
        """
        out = []
        for s in self.scale_for(spatial_dims):
            if s == 1:
                out.append(0)
            elif self.method == "kspace":
                out.append(-1)
            else:
                taps = self._taps(s, channels=None)
                out.append((taps.shape[1] - s) // 2)
        return tuple(out)

    def _sigma_per_channel(self, s: int, channels: int | None) -> np.ndarray:
        sigma = self.params.get("sigma", default_sigma(s))
        if isinstance(sigma, list) and channels is None:
            return np.asarray(sigma, dtype=np.float64)
        if channels is None:
            channels = 1
        if isinstance(sigma, list):
            if len(sigma) == 1:
                sigma = sigma * channels
            if len(sigma) != channels:
                raise DataError(
                    f"the gaussian degradation has {len(sigma)} sigmas but the data has {channels} bands: "
                    "give one sigma, or one per band"
                )
            return np.asarray(sigma, dtype=np.float64)
        return np.full(channels, float(sigma))

    def _taps(self, s: int, *, channels: int | None) -> np.ndarray:
        """Strided-kernel weights ``(channels or 1, K)`` (``channels=None``: as many rows as sigmas) with ``K = s + 2 r``, for one axis of factor ``s``.

        Low-resolution voxel ``j`` is ``sum_t w[t] x[j s - r + t]``; its centre sits at high-res
        index ``j s + (s - 1) / 2``.
        """
        centre = (s - 1) / 2.0
        if self.method == "area":
            return np.full((1, s), 1.0 / s)
        if self.method == "bicubic":
            r = 2 * s
            u = (np.arange(s + 2 * r) - r - centre) / s
            w = _keys_cubic(u)
            return (w / w.sum())[np.newaxis]
        if self.method == "slice":
            fwhm = self.params.get("fwhm", s * (1.0 - self.params.get("gap", 0.0)))
            if self.params.get("profile") == "box":
                return _box_taps(s, fwhm)
            sigma = fwhm / _FWHM_PER_SIGMA
            r = max(math.ceil(_GAUSS_TRUNCATE * sigma - centre), 0)
            u = np.arange(s + 2 * r) - r - centre
            w = np.exp(-0.5 * (u / sigma) ** 2)
            return (w / w.sum())[np.newaxis]
        if self.method == "gaussian":
            sigmas = self._sigma_per_channel(s, channels)
            radius = math.ceil(_GAUSS_TRUNCATE * sigmas.max())
            k = np.arange(-radius, radius + 1)
            rows = []
            for sigma in sigmas:
                g = np.exp(-0.5 * (k / sigma) ** 2)
                g /= g.sum()
                rows.append(np.convolve(g, np.full(s, 1.0 / s)))  # blur then block mean
            w = np.stack(rows)
            if np.allclose(w, w[:1]):
                w = w[:1]
            return w
        raise AssertionError(self.method)  # pragma: no cover

    def _boundary(self) -> str:
        return "renormalize" if self.method == "bicubic" else "reflect"

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the linear operator ``D`` to a batch ``(N, C, *S)``, giving ``(N, C, *S / scale)``.

        Differentiable (the adjoint is ``torch.func.vjp``); computes in ``x``'s floating dtype.

        Raises
        ------
        DataError
            If ``x`` is not ``(N, C, *S)`` with 2 or 3 spatial axes, or ``S`` is not divisible by the scale.
        """
        if not torch.is_floating_point(x):
            x = x.float()
        dims = x.ndim - 2
        if dims not in (1, 2, 3):
            raise DataError(f"apply expects a batch (N, C, *spatial), got shape {tuple(x.shape)}")
        scale = self.scale_for(dims)
        for n, s in zip(x.shape[2:], scale):
            if n % s:
                raise DataError(
                    f"spatial shape {tuple(x.shape[2:])} is not divisible by the scale {list(scale)}: "
                    "crop to a multiple of the scale first"
                )
        for axis, s in enumerate(scale):
            if s == 1:
                continue
            if self.method == "kspace":
                x = _kspace_axis(x, axis=2 + axis, s=s)
            else:
                w = torch.as_tensor(self._taps(s, channels=x.shape[1]), dtype=x.dtype, device=x.device)
                x = _strided_axis(x, w, axis=2 + axis, s=s, boundary=self._boundary())
        return x

    def apply_masked(
        self, x: torch.Tensor, valid: torch.Tensor, *, fill: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply ``D`` to data with invalid (nodata) pixels, without letting them bleed into valid ones.

        Invalid pixels are set to zero, the result is divided by ``D`` of the validity (normalised
        convolution), and a low-resolution pixel is valid only if every high-resolution pixel of its
        support is. Valid low-resolution pixels therefore equal ``D(x)`` of a fully valid image; the
        others hold a weighted mean of the valid pixels they touch (``fill`` when none).

        For kspace, whose support is the whole axis, invalid pixels are set to zero and a
        low-resolution voxel ``j`` counts as valid when the high-resolution voxels ``j s - s .. j s + s``
        are (an approximation).

        Parameters
        ----------
        x
            ``(N, C, *S)`` batch.
        valid
            ``(N, 1, *S)`` or ``(N, *S)`` boolean validity.
        fill
            Value of low-resolution pixels that touch no valid pixel (``nan`` to find them later).

        Returns
        -------
        tuple of torch.Tensor
            The ``(N, C, *S / scale)`` result and its ``(N, 1, *S / scale)`` boolean validity.
        """
        if valid.ndim == x.ndim - 1:
            valid = valid.unsqueeze(1)
        validf = valid.to(dtype=x.dtype if torch.is_floating_point(x) else torch.float32)
        xf = x * validf
        dims = x.ndim - 2
        scale = self.scale_for(dims)
        invalid = 1.0 - validf
        if self.method == "kspace":
            y = self.apply(xf)
            for axis, s in enumerate(scale):
                if s > 1:
                    w = torch.ones(1, 2 * s + 1, dtype=invalid.dtype, device=invalid.device)
                    invalid = _strided_axis(invalid, w, axis=2 + axis, s=s, boundary="zero", lo=s)
            return y, invalid <= 0
        num = self.apply(xf)
        den = self.apply(validf)
        for axis, s in enumerate(scale):
            if s == 1:
                continue
            w = torch.as_tensor(
                self._taps(s, channels=x.shape[1]), dtype=invalid.dtype, device=invalid.device
            )
            touch = (w.abs() > 1e-12).any(0, keepdim=True).to(invalid.dtype)
            boundary = "zero" if self._boundary() == "renormalize" else "reflect"
            invalid = _strided_axis(invalid, touch, axis=2 + axis, s=s, boundary=boundary)
        lq_valid = invalid <= 0
        safe = den.abs() > 1e-3
        partial = torch.where(
            safe, num / torch.where(safe, den, torch.ones_like(den)), torch.full_like(num, fill)
        )
        y = torch.where(lq_valid, num, partial)
        return y, lq_valid


def _box_taps(s: int, width: float) -> np.ndarray:
    """Taps ``(1, s + 2 r)`` of a box of ``width`` high-resolution voxels centred on a low-resolution voxel.

    Each tap is the overlap of the box with its voxel ``[u - 1/2, u + 1/2]``, normalised to sum to one.
    """
    centre = (s - 1) / 2.0
    r = max(math.ceil(width / 2 + 0.5 - centre), 0)
    u = np.arange(s + 2 * r) - r - centre
    w = np.clip(np.minimum(u + 0.5, width / 2) - np.maximum(u - 0.5, -width / 2), 0.0, None)
    while r > 0 and w[0] <= 1e-12 and w[-1] <= 1e-12:
        w, r = w[1:-1], r - 1
    return (w / w.sum())[np.newaxis]


def _keys_cubic(u: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel."""
    u = np.abs(u)
    w = np.zeros_like(u)
    near = u <= 1
    far = (u > 1) & (u < 2)
    w[near] = ((a + 2) * u[near] - (a + 3)) * u[near] ** 2 + 1
    w[far] = ((a * u[far] - 5 * a) * u[far] + 8 * a) * u[far] - 4 * a
    return w


def _reflect_index(n: int, lo: int, hi: int) -> np.ndarray:
    """Indices ``-lo .. n + hi - 1`` reflected into ``0 .. n - 1`` (mirror without repeating the edge)."""
    idx = np.arange(-lo, n + hi)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def _strided_axis(
    x: torch.Tensor, w: torch.Tensor, *, axis: int, s: int, boundary: str, lo: int | None = None
) -> torch.Tensor:
    """Strided 1D convolution along ``axis`` of ``(N, C, *S)`` with per-channel (or shared) taps ``w``.

    Output ``j`` is ``sum_t w[c, t] x[j s - lo + t]`` (``lo`` defaults to ``(K - s) / 2``), with
    ``boundary`` ``"reflect"``, ``"zero"`` or ``"renormalize"`` (zero padding, then division by the
    sum of the in-bounds weights).
    """
    channels = x.shape[1]
    k = w.shape[-1]
    if lo is None:
        lo = (k - s) // 2
    hi = k - s - lo
    n = x.shape[axis]
    dims = x.ndim - 2
    if lo == hi == 0:
        xp = x
    elif boundary == "reflect":
        idx = torch.as_tensor(_reflect_index(n, lo, hi), device=x.device)
        xp = x.index_select(axis, idx)
    else:
        pad = [0, 0] * dims
        pad[2 * (x.ndim - 1 - axis)] = lo
        pad[2 * (x.ndim - 1 - axis) + 1] = hi
        xp = F.pad(x, pad)
    # One strided view per tap, weighted and summed: memory stays at the output size (an unfolded
    # view times the taps would hold K / s copies) and it is faster than a grouped strided convolution.
    m = n // s
    wshape = [1] * x.ndim
    wshape[1] = w.shape[0]
    y = None
    for t in range(k):
        index: list[slice] = [slice(None)] * x.ndim
        index[axis] = slice(t, t + (m - 1) * s + 1, s)
        term = xp[tuple(index)] * w[:, t].reshape(wshape)
        y = term if y is None else y + term
    assert y is not None
    if boundary == "renormalize":
        ones = F.pad(torch.ones(1, 1, n, dtype=x.dtype, device=x.device), (lo, hi))
        wc = w.expand(channels, k) if w.shape[0] == 1 else w
        den = F.conv1d(ones.expand(1, channels, -1), wc.reshape(channels, 1, k), stride=s, groups=channels)
        den_shape = [1, channels] + [1] * dims
        den_shape[axis] = den.shape[-1]
        y = y / den.reshape(den_shape)
    return y


def _kspace_axis(x: torch.Tensor, *, axis: int, s: int) -> torch.Tensor:
    """Keep the central ``n / s`` DFT frequencies along ``axis`` (Nyquist split symmetrically)."""
    n = x.shape[axis]
    m = n // s
    spectrum = torch.fft.rfft(x, dim=axis)
    kept = spectrum.narrow(axis, 0, m // 2 + 1)
    if m % 2 == 0:
        # The shared Nyquist bin of the small grid receives half of +m/2 and half of -m/2; for a real
        # input the two are conjugate, so the sum is the real part. irfft would drop the imaginary part
        # anyway; doing it explicitly keeps the operator (and its autograd adjoint) well defined.
        nyq = kept.narrow(axis, m // 2, 1)
        kept = torch.cat(
            [kept.narrow(axis, 0, m // 2), torch.complex(nyq.real, torch.zeros_like(nyq.real))], axis
        )
    return torch.fft.irfft(kept, n=m, dim=axis) * (m / n)


def add_noise(
    x: torch.Tensor,
    *,
    level: float,
    kind: str = "rician",
    generator: torch.Generator | None = None,
    robust_range: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Add noise whose standard deviation is ``level`` times the robust range of the data.

    Parameters
    ----------
    x
        ``(N, C, *S)`` batch (or any tensor whose first two axes are sample and channel).
    level
        Noise standard deviation as a fraction of ``robust_range``; 0 returns ``x`` unchanged.
    kind
        ``"rician"`` for magnitude MRI, ``sqrt((x + n1)^2 + n2^2)``, or ``"gaussian"``, ``x + n1``
        (reflectance, or MRI already normalised around zero).
    generator
        Random generator for reproducible noise.
    robust_range
        The intensity scale: a number, or a tensor broadcastable to ``(N, C)``. Default: the 99th
        percentile of ``|x|`` per sample and channel.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> y = add_noise(torch.ones(1, 1, 8, 8), level=0.1, kind="gaussian", generator=g)
    >>> y.shape
    torch.Size([1, 1, 8, 8])
    """
    if kind not in ("rician", "gaussian"):
        raise RecipeError(f"unknown noise kind {kind!r}: use rician or gaussian")
    if not np.isfinite(level) or level < 0:
        raise RecipeError(f"noise level must be >= 0 (got {level!r})")
    if level == 0:
        return x
    if robust_range is None:
        flat = x.detach().abs().flatten(2)
        k = max(1, math.ceil(0.99 * flat.shape[-1]))
        robust_range = flat.kthvalue(k, dim=-1).values
    rr = torch.as_tensor(robust_range, dtype=x.dtype, device=x.device)
    if rr.ndim == 2:
        rr = rr.reshape(*rr.shape, *([1] * (x.ndim - 2)))
    sigma = level * rr

    def normal() -> torch.Tensor:
        device = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)

    if kind == "gaussian":
        return x + sigma * normal()
    n1 = normal()
    n2 = normal()
    return torch.sqrt((x + sigma * n1) ** 2 + (sigma * n2) ** 2)


def _robust_range(data: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """99th percentile of ``|data|`` of valid pixels, per channel."""
    out = []
    for band in data:
        values = np.abs(band[valid] if valid is not None else band.ravel())
        out.append(float(np.percentile(values, 99)) if values.size else 0.0)
    return np.asarray(out)


def degrade(
    image: Image | Any,
    *,
    scale: int | Sequence[int],
    method: str = "gaussian",
    noise: float = 0.0,
    seed: int | None = None,
    noise_kind: str | None = None,
    **params: Any,
) -> Image:
    """Make the low-resolution twin of ``image`` with its grid moved as the degradation defines.

    The image is cropped at the far end of each axis to a multiple of the scale if needed (logged and
    recorded in the provenance), degraded in float32, optionally made noisy, and returned with
    ``meta.zoom(1 / scale, convention=...)``: the output shape is exactly the (cropped) input shape
    divided by the scale. ``meta.dtype`` keeps the input's on-disk type (the writer rounds and clips
    integers). With a mask, a low-resolution pixel is valid only if its whole support is valid, and
    invalid pixels never bleed into valid ones (see :meth:`Degradation.apply_masked`); invalid
    output pixels hold ``meta.nodata`` when it is set.

    Parameters
    ----------
    image
        The high-resolution image, ``(C, *spatial)``, or a user's object (numpy array with
        ``affine=``, nibabel image, rasterio dataset, xarray DataArray), given back as the same
        kind (see :mod:`aesr_sci.io.objects`).
    scale
        Integer factor, or one per spatial axis (``(1, 1, 4)`` for thick slices).
    method
        One of :data:`aesr_sci.spatial.METHODS`.
    noise
        Noise standard deviation as a fraction of the 99th percentile of the valid data (per band).
    seed
        Seed for the noise (and for ``sigma_jitter`` if given).
    noise_kind
        ``"rician"`` or ``"gaussian"``; default Rician for kspace and slice (magnitude MRI), Gaussian
        otherwise.
    **params
        Method parameters, see :class:`Degradation`.

    Returns
    -------
    Image
        The degraded image, float32, with ``provenance["degradation"]``.

    Raises
    ------
    RecipeError
        For an unknown method or parameter.
    ParameterError
        For a scale that is not whole numbers >= 1, or not one factor per spatial axis.
    DataError
        If the image is smaller than the scale along some axis.

    Examples
    --------
    >>> import numpy as np
    >>> from aesr_sci.spatial import Image, SpatialMeta
    >>> gt = Image(np.random.rand(1, 9, 8, 8).astype("float32"), SpatialMeta(np.eye(4)))
    >>> lq = degrade(gt, scale=2, method="kspace")
    >>> lq.spatial_shape, lq.meta.provenance["degradation"]["convention"]
    ((4, 4, 4), 'origin')
    """
    kw = {"scale": scale, "method": method, "noise": noise, "seed": seed, "noise_kind": noise_kind}
    if not isinstance(image, Image):  # a user's object (see aesr_sci.io.objects): the same kind back
        from ..io import from_image, to_image

        img, kind = to_image(image, **{k: params.pop(k) for k in ("affine", "crs") if k in params})
        return from_image(degrade(img, **kw, **params), kind)
    if image.mask is not None and image.mask.ndim == image.data.ndim:  # per-band nodata: band by band
        return _degrade_by_band(image, kw, params)
    deg = Degradation(method, per_axis(scale, image.spatial_dims), params)
    int_scale = deg.scale_for(image.spatial_dims)
    cropped = _cropped_shape(image.spatial_shape, int_scale)
    rng = np.random.default_rng(seed)
    if "sigma_jitter" in deg.params:
        deg = deg.randomized(rng)  # record the blur actually applied
    provenance: dict[str, Any] = deg.to_dict() | {"convention": deg.convention}
    data, mask = _crop(image, cropped, int_scale, provenance)
    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None]
    with torch.no_grad():
        y, lq_mask = _apply_operator(deg, x, mask)
        if noise:
            kind = noise_kind or METHODS[method].noise
            rr = torch.from_numpy(_robust_range(np.asarray(data, dtype=np.float32), mask)).float()[None]
            gen = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
            y = add_noise(y, level=noise, kind=kind, generator=gen, robust_range=rr)
            provenance["noise"] = {"level": float(noise), "kind": kind, "seed": seed}
    out = _fill_invalid(y[0].numpy().astype(np.float32, copy=False), lq_mask, image.meta.nodata)
    meta = image.meta.zoom([1.0 / s for s in int_scale], convention=deg.convention)
    meta = meta.with_provenance(degradation=provenance)
    return Image(out, meta, lq_mask)


def _degrade_by_band(image: Image, kw: dict[str, Any], params: dict[str, Any]) -> Image:
    """:func:`degrade` of an image with per-band nodata: each band with its own mask, then restacked."""
    bands = [
        degrade(image.replace(data=image.data[b : b + 1], mask=image.mask[b]), **kw, **params)
        for b in range(image.channels)
    ]
    masks = np.stack([np.ones(b.spatial_shape, bool) if b.mask is None else b.mask for b in bands])
    return bands[0].replace(data=np.concatenate([b.data for b in bands]), mask=masks)


def _cropped_shape(shape: tuple[int, ...], int_scale: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` cut down to a multiple of the scale along each axis; an image smaller than the
    scale is refused."""
    cropped = tuple(n - n % s for n, s in zip(shape, int_scale))
    if any(c == 0 for c in cropped):
        raise DataError(f"an image of spatial shape {shape} is smaller than the scale {list(int_scale)}")
    return cropped


def _crop(
    image: Image, cropped: tuple[int, ...], int_scale: tuple[int, ...], provenance: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray | None]:
    """The image's data and mask cut at the far end of each axis to ``cropped``, the crop logged and
    recorded in ``provenance``."""
    data, mask, shape = image.data, image.mask, image.spatial_shape
    if cropped != shape:
        logger.info("cropping %s to %s, a multiple of the scale %s", shape, cropped, list(int_scale))
        region = (slice(None), *(slice(0, c) for c in cropped))
        data = data[region]
        mask = mask[region[1:]] if mask is not None else None
        provenance["crop"] = {"from_shape": list(shape), "to_shape": list(cropped)}
    return data, mask


def _apply_operator(
    deg: Degradation, x: torch.Tensor, mask: np.ndarray | None
) -> tuple[torch.Tensor, np.ndarray | None]:
    """The degradation of a batch of one and the low-resolution validity (None without a mask)."""
    if mask is not None and not mask.all():
        y, lq_valid = deg.apply_masked(x, torch.from_numpy(np.ascontiguousarray(mask))[None])
        return y, lq_valid[0, 0].numpy()
    y = deg.apply(x)
    return y, None if mask is None else np.ones(y.shape[2:], dtype=bool)


def _fill_invalid(out: np.ndarray, lq_mask: np.ndarray | None, nodata: float | None) -> np.ndarray:
    """``out`` with its invalid pixels set to ``nodata`` (0 when unset)."""
    if lq_mask is not None and not lq_mask.all():
        fill = nodata if nodata is not None else 0.0
        out = np.where(lq_mask[np.newaxis], out, np.float32(fill)).astype(np.float32)
    return out
