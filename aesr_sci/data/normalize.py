"""Reversible intensity normalisation whose statistics are stored with the model.

A :class:`Normalizer` is the *recipe* (method and options, :meth:`Normalizer.to_dict` goes into the
checkpoint); :meth:`Normalizer.fit` measures one image and returns its *statistics*, a small
JSON-serialisable dict; :meth:`Normalizer.apply` and :meth:`Normalizer.invert` use them. Inputs
may be numpy arrays or torch tensors, channel-first (``channel_axis=0``, ``(C, *spatial)``) or batched
(``channel_axis=1``, ``(N, C, *spatial)``); the result has the same type.

Methods
-------
``percentile``
    Map the ``p_low`` and ``p_high`` percentiles of the valid (or foreground) values to 0 and 1, per
    channel or for all channels together (``per_channel=False``, which keeps the ratios between
    bands or contrasts).
``fixed``
    ``x * scale + offset`` with fixed numbers, e.g. ``scale=1e-4`` for Sentinel-2 reflectance stored
    as ``x 10000``.
``none``
    The identity.

Statistics are fitted in one place, :func:`fit_statistics`, under one explicit mask policy
(:data:`STATISTICS_POLICIES`): ``"foreground"`` (valid voxels that differ from the background,
for MRI, whose air would otherwise set the low percentile) or ``"valid"`` (every non-nodata pixel,
for rasters). They are always fitted on the *low-resolution input*: the training sampler on each
file's degraded twin, validation, :func:`~aesr_sci.infer.upscale` and
:func:`~aesr_sci.metrics.evaluate` on the input they are given. ``model.json`` records the policy
the model was trained with (``"statistics"``), so inference normalises its input as training did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import DataError, RecipeError

__all__ = [
    "FOREGROUND_THRESHOLD",
    "NORMALIZATIONS",
    "STATISTICS_POLICIES",
    "Normalizer",
    "fit_statistics",
    "foreground_level",
    "foreground_mask",
    "statistics_policy",
]

NORMALIZATIONS: tuple[str, ...] = ("percentile", "fixed", "none")
STATISTICS_POLICIES: tuple[str, ...] = ("foreground", "valid")
FOREGROUND_THRESHOLD = 0.05  # foreground: 5 % of the robust range away from the background, in some channel

_EPS = 1e-8


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


@dataclass(frozen=True)
class Normalizer:
    """A reversible intensity normalisation.

    Parameters
    ----------
    method
        ``"percentile"``, ``"fixed"`` or ``"none"``.
    p_low, p_high
        Percentiles mapped to 0 and 1 (percentile method).
    per_channel
        Percentile method: one pair of percentiles per channel (True) or one for all channels.
    scale, offset
        Fixed method: ``x * scale + offset``.

    Raises
    ------
    RecipeError
        For an unknown method or inconsistent options.

    Examples
    --------
    >>> import numpy as np
    >>> norm = Normalizer("percentile", p_low=0.0, p_high=100.0)
    >>> x = np.array([[0.0, 5.0, 10.0]])
    >>> stats = norm.fit(x)
    >>> norm.apply(x, stats).tolist()
    [[0.0, 0.5, 1.0]]
    >>> norm.invert(norm.apply(x, stats), stats).tolist()
    [[0.0, 5.0, 10.0]]
    """

    method: str = "percentile"
    p_low: float = 0.5
    p_high: float = 99.5
    per_channel: bool = True
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in NORMALIZATIONS:
            raise RecipeError(
                f"unknown normalisation method {self.method!r}: use one of {', '.join(NORMALIZATIONS)}"
            )
        if not 0.0 <= self.p_low < self.p_high <= 100.0:
            raise RecipeError(
                f"normalisation percentiles must satisfy 0 <= p_low < p_high <= 100 "
                f"(got p_low={self.p_low}, p_high={self.p_high})"
            )
        if self.method == "fixed" and (not np.isfinite(self.scale) or self.scale == 0):
            raise RecipeError(f"fixed normalisation needs a finite, non-zero scale (got {self.scale})")

    # ------------------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable options (for checkpoints and recipes)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | str | None) -> Normalizer:
        """Build from :meth:`to_dict` output, a method name, or ``None`` (the default percentile).

        Raises
        ------
        RecipeError
            For unknown keys (the message lists the valid ones) or invalid values.
        """
        if d is None:
            return cls()
        if isinstance(d, str):
            return cls(method=d)
        if isinstance(d, Normalizer):
            return d
        valid = tuple(cls.__dataclass_fields__)
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise RecipeError(
                f"unknown normalisation key(s) {', '.join(unknown)}: valid keys are {', '.join(valid)}"
            )
        return cls(**dict(d))

    # ------------------------------------------------------------------------------------ maths
    def fit(self, data: Any, mask: Any = None, *, channel_axis: int = 0) -> dict[str, Any]:
        """Measure ``data`` and return the statistics that :meth:`apply` and :meth:`invert` need.

        Parameters
        ----------
        data
            Array or tensor with channels on ``channel_axis``.
        mask
            Optional boolean array of ``data``'s shape without the channel axis; only ``True``
            values (valid, foreground) are measured.
        channel_axis
            Which axis holds the channels.

        Returns
        -------
        dict
            ``{"method": ..., "low": [...], "high": [...]}`` (one entry per channel, or one for all)
            for percentile; ``{"method": ..., "scale": s, "offset": o}`` for fixed; ``{"method":
            "none"}`` otherwise.

        Raises
        ------
        DataError
            If the mask selects no value.
        """
        if self.method == "none":
            return {"method": "none"}
        if self.method == "fixed":
            return {"method": "fixed", "scale": float(self.scale), "offset": float(self.offset)}
        arr = data.detach().cpu().numpy() if _is_torch(data) else np.asarray(data)
        arr = np.moveaxis(arr, channel_axis, 0)
        if mask is not None:
            m = mask.detach().cpu().numpy() if _is_torch(mask) else np.asarray(mask)
            m = m.astype(bool)
            if m.ndim == arr.ndim:  # one mask per channel (GeoTIFF per-band nodata), or a channel axis of 1
                m = np.moveaxis(m, channel_axis, 0)
                masks = list(m) if m.shape[0] == arr.shape[0] else [m[0]] * len(arr)
            else:
                masks = [m] * len(arr)
            values = [band[mb] for band, mb in zip(arr, masks)]
        else:
            values = [band.ravel() for band in arr]
        if values and all(v.size == 0 for v in values):
            raise DataError("cannot fit the normalisation: the mask selects no valid pixel")
        groups = values if self.per_channel else [np.concatenate(values)]
        low, high = [], []
        for v in groups:
            if v.size == 0:  # a band without valid pixels: its output is all nodata anyway
                low.append(0.0)
                high.append(1.0)
                continue
            v = v[np.isfinite(v)].astype(np.float64)
            if v.size == 0:
                raise DataError("cannot fit the normalisation: no finite value")
            lo, hi = np.percentile(v, [self.p_low, self.p_high])
            low.append(float(lo))
            high.append(float(hi))
        return {"method": "percentile", "low": low, "high": high}

    def _coefficients(
        self, stats: Mapping[str, Any], n_channels: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(a, b)`` per channel such that ``apply(x) = x * a + b``; ``None`` for the identity."""
        method = stats.get("method")
        if method != self.method:
            raise DataError(
                f"normalisation statistics were made by method {method!r} but this normaliser is "
                f"{self.method!r}: fit them again"
            )
        if method == "none":
            return None
        if method == "fixed":
            a = np.full(n_channels, float(stats["scale"]))
            b = np.full(n_channels, float(stats["offset"]))
            return a, b
        low = np.asarray(stats["low"], dtype=np.float64)
        high = np.asarray(stats["high"], dtype=np.float64)
        if low.size == 1:
            low, high = np.repeat(low, n_channels), np.repeat(high, n_channels)
        if low.size != n_channels:
            raise DataError(
                f"normalisation statistics have {low.size} channels but the data has {n_channels}"
            )
        a = 1.0 / np.maximum(high - low, _EPS)
        return a, -low * a

    def _affine(self, data: Any, stats: Mapping[str, Any], channel_axis: int, *, inverse: bool) -> Any:
        n_channels = data.shape[channel_axis]
        coef = self._coefficients(stats, n_channels)
        if coef is None:
            return data
        a, b = coef
        if inverse:
            a, b = 1.0 / a, -b / a
        shape = [1] * data.ndim
        shape[channel_axis] = n_channels
        if _is_torch(data):
            import torch

            dtype = data.dtype if torch.is_floating_point(data) else torch.float32
            at = torch.as_tensor(a.reshape(shape), dtype=dtype, device=data.device)
            bt = torch.as_tensor(b.reshape(shape), dtype=dtype, device=data.device)
            return data.to(dtype) * at + bt
        arr = np.asarray(data)
        dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32
        return (arr * a.reshape(shape).astype(dtype) + b.reshape(shape).astype(dtype)).astype(
            dtype, copy=False
        )

    def apply(self, data: Any, stats: Mapping[str, Any], *, channel_axis: int = 0) -> Any:
        """Normalise ``data`` with ``stats`` from :meth:`fit` (a float array or tensor of the same kind)."""
        return self._affine(data, stats, channel_axis, inverse=False)

    def invert(self, data: Any, stats: Mapping[str, Any], *, channel_axis: int = 0) -> Any:
        """Undo :meth:`apply`, back to the original intensities."""
        return self._affine(data, stats, channel_axis, inverse=True)


# -------------------------------------------------------------------------------- statistics
def statistics_policy(formats: Any) -> str:
    """The mask policy for files of these formats: ``"foreground"`` for NIfTI (MRI), else ``"valid"``.

    ``formats`` is one format name (``"nifti"``, ``"geotiff"``) or several; mixed or unknown
    (``None``: an image made in memory) formats get ``"valid"``, which needs no notion of air.
    """
    names = {formats} if isinstance(formats, str) or formats is None else set(formats)
    return "foreground" if names == {"nifti"} else "valid"


def _check_policy(policy: str) -> None:
    if policy not in STATISTICS_POLICIES:
        raise DataError(f"unknown statistics policy {policy!r}: use one of {', '.join(STATISTICS_POLICIES)}")


def foreground_level(
    data: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    threshold: float = FOREGROUND_THRESHOLD,
    faces: np.ndarray | None = None,
) -> np.ndarray:
    """Per channel, ``(background, margin)``: foreground differs from the background by more than margin.

    The background is the median of the image's outer faces (0 for most scans, a negative constant
    for z-scored ones such as BRATS); the margin is ``threshold`` times the valid values' robust range
    (0.5th to 99.5th percentile). Unlike a level above the minimum, this holds on a k-space-degraded
    input, whose Gibbs ringing puts the minimum far below the air.

    Parameters
    ----------
    data
        ``(C, *spatial)`` array.
    valid
        Spatial boolean array (False on nodata), or None.
    threshold
        The margin as a fraction of the robust range.
    faces
        ``(C, N)`` values of the outer faces, for a sample of a larger image whose own faces these
        are not (the background is their median).

    Returns
    -------
    numpy.ndarray
        ``(C, 2)`` float32: background and margin per channel.
    """
    if faces is None:
        v = np.ones(data.shape[1:], bool) if valid is None else valid
        parts = [
            np.moveaxis(data, ax, 1)[:, [0, -1]][:, np.moveaxis(v, ax - 1, 0)[[0, -1]]]
            for ax in range(1, data.ndim)
        ]
        faces = np.concatenate(parts, axis=1)
    out = []
    for band, face in zip(data, faces):
        values = band[valid] if valid is not None else band.ravel()
        values = values[np.isfinite(values)]
        face = face[np.isfinite(face)]
        if values.size == 0:
            out.append((0.0, 0.0))
            continue
        lo, hi = np.percentile(values, [0.5, 99.5])
        background = float(np.median(face)) if face.size else float(lo)
        out.append((background, threshold * float(hi - lo)))
    return np.asarray(out, dtype=np.float32)


def foreground_mask(
    data: np.ndarray, valid: np.ndarray | None, level: np.ndarray | None
) -> np.ndarray | None:
    """Valid values that differ from the background by more than the margin in some channel
    (``valid`` itself when ``level`` is None); ``level`` from :func:`foreground_level`."""
    if level is None:
        return valid
    fg = np.zeros(data.shape[1:], dtype=bool)
    for band, (background, margin) in zip(data, level):
        fg |= np.abs(band - background) > margin
    return fg if valid is None else fg & valid


def fit_statistics(
    data: Any,
    valid: Any = None,
    *,
    normalizer: Normalizer | Mapping[str, Any] | str | None,
    policy: str,
    threshold: float = FOREGROUND_THRESHOLD,
    level: np.ndarray | None = None,
) -> dict[str, Any]:
    """Normalisation statistics of one image under one mask policy: the only place they are fitted.

    Parameters
    ----------
    data
        ``(C, *spatial)`` array: a whole image, a window, or a decimated read of a raster too large
        for memory (statistics of the whole raster from a sample of it). Torch tensors are accepted.
    valid
        Boolean array of the spatial shape, False on nodata; None when every value is valid.
    normalizer
        A :class:`Normalizer` (or its dict or method name).
    policy
        ``"foreground"``: valid values away from the background (:func:`foreground_level`) in
        some channel (MRI; falls back to every valid value when none is); ``"valid"``: every valid
        value (rasters).
    threshold
        Foreground margin as a fraction of the robust range (``"foreground"`` only).
    level
        A :func:`foreground_level` measured elsewhere (for a sample without the image's faces);
        default: measured on ``data``.

    Returns
    -------
    dict
        The statistics for :meth:`Normalizer.apply` and :meth:`Normalizer.invert`.

    Raises
    ------
    DataError
        An unknown policy, or no valid finite value.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((1, 10, 10), np.float32)
    >>> x[:, 2:8, 2:8] = np.linspace(100, 200, 36, dtype=np.float32).reshape(1, 6, 6)
    >>> norm = Normalizer("percentile", p_low=0, p_high=100)
    >>> fit_statistics(x, normalizer=norm, policy="foreground")["low"]
    [100.0]
    >>> fit_statistics(x, normalizer=norm, policy="valid")["low"]
    [0.0]
    """
    _check_policy(policy)
    norm = Normalizer.from_dict(normalizer)  # type: ignore[arg-type]
    if norm.method != "percentile":
        return norm.fit(data)  # fixed numbers: nothing to measure
    arr = data.detach().cpu().numpy() if _is_torch(data) else np.asarray(data)
    mask = (
        None if valid is None else (valid.detach().cpu().numpy() if _is_torch(valid) else np.asarray(valid))
    )
    mask = None if mask is None else mask.astype(bool, copy=False)
    if mask is not None and not mask.any():
        raise DataError("cannot fit the normalisation: every pixel is nodata")
    if policy == "foreground":
        if level is None:
            level = foreground_level(arr, mask, threshold=threshold)
        fg = foreground_mask(arr, mask, level)
        if fg is not None and fg.any():
            mask = fg
    return norm.fit(arr, mask)
