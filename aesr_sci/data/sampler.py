"""The patch sampler shared by both domains: aligned low/high-resolution pairs from NIfTI and GeoTIFF files.

:class:`PairDataset` is a map-style :class:`torch.utils.data.Dataset`. Each item is a dict of plain
tensors that the default collate stacks::

    {"lq": (C, *patch / scale) float32,   # degraded, normalised input
     "gt": (C, *patch) float32,           # normalised target (0 where invalid)
     "mask": (1, *patch) float32,         # 1 where the target is valid for the loss, 0 on nodata
     "location": int64 [file_index, start_0, ..., start_{D-1}]}   # one start per *file* axis

Design:

* **Deterministic.** Item ``i`` of epoch ``e`` draws everything (file, position, augmentation, noise,
  blur jitter) from a generator seeded with ``(seed, e, i)``, so batches are identical whatever
  ``num_workers`` is, workers need no seeding, and ``DistributedSampler`` shards work unchanged.
  Call :meth:`PairDataset.set_epoch` each epoch.
* **Exact pairs.** Files that fit in ``max_cached_bytes`` are read whole, and their low-resolution
  twin is computed once with the full degradation (exact for k-space, whose truncation is not
  local); patches start on multiples of the scale, so ``lq`` is exactly the degradation of the file
  seen through the patch. Larger rasters are read by windows with a margin covering the blur
  kernel and degraded window by window, which gives the same values with bounded memory. A
  per-worker LRU cache keeps whole files up to ``max_cached_bytes``.
* **Masks.** Nodata pixels (``Image.mask``) never bleed into valid low-resolution pixels (see
  :meth:`~aesr_sci.data.degrade.Degradation.apply_masked`) and get ``mask = 0``. For MRI, voxels
  above a small fraction of the intensity range count as foreground; patches with less than
  ``min_valid`` valid foreground are drawn again (up to ``max_tries``, then the best is kept).
* **Normalisation** is fitted per file (``dataset.stats[file_index]``) and applied to both images.
* **Augmentation respects the physics**: flips along any axis, and axis permutations (hence
  90-degree rotations) only among axes with the same scale, voxel spacing and patch size; an
  anisotropic axis (scale ``(1, 1, 4)``) is never swapped with another. For the ``"origin"``
  convention (k-space) a flip shifts the high-resolution crop by ``s - 1`` so the pair stays
  aligned.
* ``spatial_dims=2`` on 3D volumes samples 2D slices along ``slice_axis``.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..spatial import Image, SpatialMeta
from .degrade import Degradation
from .normalize import Normalizer

__all__ = ["PairDataset", "check_sources"]

logger = logging.getLogger(__name__)

_DEFAULT_CACHE = 384 * 2**20


# ------------------------------------------------------------------------------------ sources
@dataclass
class _Source:
    index: int
    name: str
    path: str | None
    image: Image | None
    meta: SpatialMeta
    channels: int
    shape: tuple[int, ...]  # spatial shape, cropped to a multiple of the scale (file axes)
    scale: tuple[int, ...]  # per file axis (1 on the slice axis)
    patch: tuple[int, ...]  # per file axis (1 on the slice axis)
    file_shape: tuple[int, ...]  # spatial shape on disk

    @property
    def nbytes(self) -> int:
        n = self.channels * math.prod(self.shape) * 4
        return n + n // max(math.prod(self.scale), 1) + 2 * math.prod(self.shape)


@dataclass
class _Loaded:
    hr: np.ndarray  # (C, *S) float32
    valid: np.ndarray | None  # (*S) bool, None = all valid
    good: np.ndarray | None  # valid and foreground, None = all
    lr: np.ndarray | None  # (C, *S / scale) float32, None when degraded on the fly
    lr_valid: np.ndarray | None

    @property
    def nbytes(self) -> int:
        arrays = (self.hr, self.valid, self.good, self.lr, self.lr_valid)
        return sum(a.nbytes for a in arrays if a is not None)


def _name(src: Any, index: int) -> str:
    return f"<image {index}>" if isinstance(src, Image) else os.fspath(src)


def _read_meta(src: Any) -> tuple[SpatialMeta, tuple[int, ...]]:
    if isinstance(src, Image):
        return src.meta, tuple(int(n) for n in src.data.shape)
    from .. import io as aio

    meta, shape = aio.read_meta(os.fspath(src))
    return meta, tuple(int(n) for n in shape)


def _file_axes(spatial_dims: int, file_dims: int, slice_axis: int, values: Sequence[int]) -> tuple[int, ...]:
    """Per-axis values of the patch space mapped onto the file's axes (1 on the slice axis)."""
    values = tuple(values)
    if file_dims == spatial_dims:
        return values
    out = list(values)
    out.insert(slice_axis, 1)
    return tuple(out)


def _parse_patch(patch_size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    if isinstance(patch_size, (int, np.integer)):
        patch = (int(patch_size),) * spatial_dims
    else:
        patch = tuple(int(p) for p in patch_size)
    if len(patch) != spatial_dims or any(p < 1 for p in patch):
        raise DataError(
            f"patch_size {list(patch)} must be {spatial_dims} positive numbers (one per spatial axis) "
            f"for spatial_dims={spatial_dims}"
        )
    return patch


def _inspect(
    paths: Sequence[Any],
    *,
    spatial_dims: int,
    patch_size: int | Sequence[int],
    scale: Sequence[int],
    slice_axis: int,
) -> list[_Source]:
    """Validate the sources against the patch and scale; raise DataError naming the file and sizes."""
    if spatial_dims not in (2, 3):
        raise DataError(f"spatial_dims must be 2 or 3 (got {spatial_dims})")
    if isinstance(paths, (str, os.PathLike, Image)):
        paths = [paths]
    if len(paths) == 0:
        raise DataError("no input files: give at least one NIfTI or GeoTIFF path")
    patch = _parse_patch(patch_size, spatial_dims)
    scale = tuple(int(s) for s in scale)
    bad = [(p, s) for p, s in zip(patch, scale) if p % s]
    if bad:
        raise DataError(
            f"patch_size {list(patch)} is not divisible by the scale {list(scale)}: use multiples of the "
            f"scale, e.g. {[max(s, p // s * s) for p, s in zip(patch, scale)]}"
        )
    sources = []
    for index, src in enumerate(paths):
        name = _name(src, index)
        meta, shape = _read_meta(src)
        file_dims = len(shape) - 1
        if file_dims < spatial_dims:
            raise DataError(f"{name}: a {file_dims}D image cannot give {spatial_dims}D patches")
        if file_dims > spatial_dims and not 0 <= slice_axis < file_dims:
            raise DataError(f"{name}: slice_axis must be in 0..{file_dims - 1} (got {slice_axis})")
        fscale = _file_axes(spatial_dims, file_dims, slice_axis, scale)
        fpatch = _file_axes(spatial_dims, file_dims, slice_axis, patch)
        spatial = shape[1:]
        cropped = tuple(n - n % s for n, s in zip(spatial, fscale))
        if any(c < p for c, p in zip(cropped, fpatch)):
            raise DataError(
                f"{name}: spatial size {list(spatial)} is smaller than the patch {list(fpatch)} "
                f"(after cropping to a multiple of the scale {list(fscale)}); use a smaller patch_size"
            )
        path = None if isinstance(src, Image) else os.fspath(src)
        image = src if isinstance(src, Image) else None
        sources.append(
            _Source(index, name, path, image, meta, shape[0], cropped, fscale, fpatch, tuple(spatial))
        )
    channels = sorted({s.channels for s in sources})
    if len(channels) > 1:
        detail = ", ".join(f"{s.name}: {s.channels}" for s in sources)
        raise DataError(f"files have different band/channel counts ({detail}): use files with the same bands")
    return sources


def check_sources(
    paths: Sequence[Any],
    *,
    spatial_dims: int,
    patch_size: int | Sequence[int],
    scale: int | Sequence[int],
    slice_axis: int = 2,
) -> dict[str, Any]:
    """Check that files can feed a :class:`PairDataset` before training, reading metadata only.

    Parameters
    ----------
    paths
        NIfTI or GeoTIFF paths (or in-memory :class:`~aesr_sci.spatial.Image` objects).
    spatial_dims
        2 (rasters, or slices of volumes along ``slice_axis``) or 3 (volume patches).
    patch_size
        High-resolution patch size, one number or one per axis, divisible by the scale.
    scale
        Integer factor, or one per axis of the patch.
    slice_axis
        Slice axis of 3D volumes when ``spatial_dims == 2``.

    Returns
    -------
    dict
        ``files``, ``channels``, ``spatial_dims``, ``shapes`` (spatial, per file), ``formats``,
        ``spacings``, ``voxels`` (total) and ``text`` (a one-line summary).

    Raises
    ------
    DataError
        Empty list, patch not divisible by the scale, a file smaller than the patch or of the wrong
        dimensionality, files with different band counts (the message names the file and sizes).
    FileReadError
        A file is missing or unreadable.

    Examples
    --------
    >>> import numpy as np
    >>> from aesr_sci.spatial import Image, SpatialMeta
    >>> img = Image(np.zeros((1, 32, 32, 32), np.float32), SpatialMeta(np.eye(4)))
    >>> check_sources([img], spatial_dims=3, patch_size=16, scale=2)["text"]
    '1 file, 1 channel, 3D patches of [16, 16, 16] at scale [2, 2, 2], 32768 voxels'
    """
    if isinstance(scale, (int, np.integer)):
        scale_t = (int(scale),) * spatial_dims
    else:
        scale_t = tuple(int(s) for s in scale)
        if len(scale_t) == 1:
            scale_t = scale_t * spatial_dims
        if len(scale_t) != spatial_dims:
            raise DataError(f"scale {list(scale_t)} must have 1 or {spatial_dims} factors")
    sources = _inspect(
        paths, spatial_dims=spatial_dims, patch_size=patch_size, scale=scale_t, slice_axis=slice_axis
    )
    patch = _parse_patch(patch_size, spatial_dims)
    voxels = sum(math.prod(s.shape) for s in sources)
    n, c = len(sources), sources[0].channels
    text = (
        f"{n} file{'s' if n != 1 else ''}, {c} channel{'s' if c != 1 else ''}, {spatial_dims}D patches of "
        f"{list(patch)} at scale {list(scale_t)}, {voxels} voxels"
    )
    return {
        "files": n,
        "channels": c,
        "spatial_dims": spatial_dims,
        "shapes": [list(s.shape) for s in sources],
        "formats": [s.meta.format for s in sources],
        "spacings": [list(s.meta.spacing) for s in sources],
        "voxels": voxels,
        "text": text,
    }


# ------------------------------------------------------------------------------------ dataset
class PairDataset(Dataset):
    """Aligned (lq, gt) patch pairs from NIfTI volumes and GeoTIFF rasters, for training and validation.

    Parameters
    ----------
    paths
        NIfTI or GeoTIFF paths, read through :mod:`aesr_sci.io` (in-memory
        :class:`~aesr_sci.spatial.Image` objects are accepted too).
    spatial_dims
        3 for volume patches; 2 for rasters, or for 2D slices of volumes along ``slice_axis``.
    patch_size
        High-resolution patch size per axis, divisible by the scale.
    degradation
        The :class:`~aesr_sci.data.degrade.Degradation` (or its dict) with one factor per patch axis.
    normalizer
        A :class:`~aesr_sci.data.normalize.Normalizer`, its dict or method name; default percentile.
    mode
        ``"random"`` (training: ``samples_per_epoch`` random patches, augmentation, noise) or
        ``"grid"`` (validation: a regular grid covering every file, deterministic, no augmentation
        and no noise).
    samples_per_epoch
        Length of an epoch in random mode.
    min_valid
        Minimum fraction of valid (non-nodata) foreground pixels in a random patch.
    max_tries
        Random positions tried before keeping the best one.
    augment
        Random flips and in-plane permutations (random mode only).
    noise
        Noise level (fraction of each file's 99th percentile), or a ``(low, high)`` range drawn
        uniformly per patch; 0 for none.
    noise_kind
        ``"rician"`` or ``"gaussian"``; default Rician for kspace and slice, Gaussian otherwise.
    slice_axis
        Slice axis of 3D files when ``spatial_dims == 2``.
    grid_stride
        Step between grid patches per axis (multiples of the scale); default the patch size.
    foreground
        Whether "valid" also requires foreground (MRI air is not foreground); default: for NIfTI only.
    foreground_threshold
        Foreground is above ``min + threshold * (p99 - min)`` in some channel.
    max_cached_bytes
        Memory budget for whole files kept in memory (per worker, LRU). Larger rasters are read
        by windows. Files degraded by kspace are always read whole.
    seed
        Base seed of the deterministic sampling.

    Attributes
    ----------
    stats
        Normalisation statistics per file (``dataset.stats[file_index]``).
    epoch
        Current epoch (see :meth:`set_epoch`).

    Raises
    ------
    DataError
        See :func:`check_sources`.

    Examples
    --------
    >>> import numpy as np
    >>> from aesr_sci.spatial import Image, SpatialMeta
    >>> from aesr_sci.data.degrade import Degradation
    >>> img = Image(np.random.rand(1, 32, 32, 32).astype("float32"), SpatialMeta(np.eye(4)))
    >>> ds = PairDataset([img], spatial_dims=3, patch_size=16, degradation=Degradation("kspace", (2, 2, 2)),
    ...                  samples_per_epoch=4, min_valid=0.0)
    >>> item = ds[0]
    >>> tuple(item["lq"].shape), tuple(item["gt"].shape), item["location"].tolist()[0]
    ((1, 8, 8, 8), (1, 16, 16, 16), 0)
    """

    def __init__(
        self,
        paths: Sequence[Any],
        *,
        spatial_dims: int,
        patch_size: int | Sequence[int],
        degradation: Degradation | dict[str, Any],
        normalizer: Normalizer | dict[str, Any] | str | None = None,
        mode: str = "random",
        samples_per_epoch: int = 1000,
        min_valid: float = 0.5,
        max_tries: int = 10,
        augment: bool = True,
        noise: float | tuple[float, float] = 0.0,
        noise_kind: str | None = None,
        slice_axis: int | None = 2,
        grid_stride: int | Sequence[int] | None = None,
        foreground: bool | None = None,
        foreground_threshold: float = 0.01,
        max_cached_bytes: int = _DEFAULT_CACHE,
        seed: int = 0,
    ) -> None:
        if mode not in ("random", "grid"):
            raise DataError(f"mode must be 'random' or 'grid' (got {mode!r})")
        if samples_per_epoch < 1:
            raise DataError(f"samples_per_epoch must be >= 1 (got {samples_per_epoch})")
        if not 0.0 <= min_valid <= 1.0:
            raise DataError(f"min_valid must be in [0, 1] (got {min_valid})")
        slice_axis = 2 if slice_axis is None else int(slice_axis)
        if not isinstance(degradation, Degradation):
            degradation = Degradation.from_dict(degradation)
        self.degradation = degradation
        self.normalizer = Normalizer.from_dict(normalizer)
        self.spatial_dims = spatial_dims
        self.scale = degradation.scale_for(spatial_dims)
        self.sources = _inspect(
            paths, spatial_dims=spatial_dims, patch_size=patch_size, scale=self.scale, slice_axis=slice_axis
        )
        self.patch_size = _parse_patch(patch_size, spatial_dims)
        self.mode = mode
        self.samples_per_epoch = int(samples_per_epoch)
        self.min_valid = float(min_valid)
        self.max_tries = max(1, int(max_tries))
        self.augment = bool(augment)
        lo_hi = (0.0, float(noise)) if np.isscalar(noise) else tuple(float(v) for v in noise)  # type: ignore[arg-type]
        if len(lo_hi) != 2 or not 0 <= lo_hi[0] <= lo_hi[1]:
            raise DataError(f"noise must be a level >= 0 or a (low, high) range (got {noise!r})")
        self.noise = float(noise) if np.isscalar(noise) else lo_hi  # type: ignore[arg-type]
        self._noise_range = lo_hi if not np.isscalar(noise) else (float(noise), float(noise))
        self.noise_kind = noise_kind or (
            "rician" if degradation.method in ("kspace", "slice") else "gaussian"
        )
        self.slice_axis = slice_axis
        self.foreground = foreground
        self.foreground_threshold = float(foreground_threshold)
        self.max_cached_bytes = int(max_cached_bytes)
        self.seed = int(seed)
        self.epoch = 0
        self._jitter = float(degradation.params.get("sigma_jitter", 0.0))
        self._precompute = degradation.method == "kspace" or self._jitter == 0.0
        self._cache: OrderedDict[int, _Loaded] = OrderedDict()
        self._margin = self._margins()
        self._grid_stride = self._parse_stride(grid_stride)
        self.stats: list[dict[str, Any]] = []
        self._robust: list[np.ndarray] = []
        self._fg_level: list[np.ndarray | None] = []
        for src in self.sources:
            self._fit(src)
        weights = np.array([math.prod(s.shape) for s in self.sources], dtype=np.float64)
        self._file_p = weights / weights.sum()
        self._grid = [self._grid_counts(s) for s in self.sources]
        self._grid_cum = np.cumsum([0] + [math.prod(len(a) for a in g) for g in self._grid])

    # ---------------------------------------------------------------------------- bookkeeping
    def _parse_stride(self, grid_stride: Any) -> tuple[int, ...]:
        if grid_stride is None:
            return self.patch_size
        stride = _parse_patch(grid_stride, self.spatial_dims)
        if any(st % s for st, s in zip(stride, self.scale)):
            raise DataError(f"grid_stride {list(stride)} must be a multiple of the scale {list(self.scale)}")
        return stride

    def _margins(self) -> tuple[int, ...]:
        """Margin (multiple of the scale) around a window so that its degradation is exact inside."""
        deg = self.degradation
        if deg.method == "kspace":
            return (0,) * self.spatial_dims
        radius = deg.support_radius(self.spatial_dims)
        out = []
        for r, s in zip(radius, self.scale):
            r = math.ceil(r * (1.0 + self._jitter)) + (1 if self._jitter else 0)
            out.append(math.ceil(r / s) * s)
        return tuple(out)

    def _is_windowed(self, src: _Source) -> bool:
        if src.image is not None or self.degradation.method == "kspace":
            return False
        return src.nbytes > self.max_cached_bytes

    def _uses_foreground(self, src: _Source) -> bool:
        if self.foreground is not None:
            return self.foreground
        return src.meta.format == "nifti"

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which (with the seed and the item index) determines every random draw."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.mode == "grid":
            return int(self._grid_cum[-1])
        return self.samples_per_epoch

    # -------------------------------------------------------------------------------- reading
    def _read(
        self, src: _Source, window: Sequence[tuple[int, int]] | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Read ``window`` (per file axis) as float32 ``(C, *w)`` with its validity (None: all valid)."""
        if window is None:
            window = [(0, n) for n in src.shape]
        if src.image is not None:
            region = tuple(slice(a, b) for a, b in window)
            data = np.asarray(src.image.data[(slice(None), *region)], dtype=np.float32)
            mask = src.image.common_mask[region] if src.image.mask is not None else None
        else:
            from .. import io as aio

            full = all(a == 0 and b == n for (a, b), n in zip(window, src.file_shape))
            img = aio.read(src.path, window=None if full else [tuple(w) for w in window])
            data = np.asarray(img.data, dtype=np.float32)
            mask = img.common_mask  # training uses pixels valid in every band
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.all():
                mask = None
        return np.ascontiguousarray(data), mask

    def _foreground(self, src: _Source, data: np.ndarray, valid: np.ndarray | None) -> np.ndarray | None:
        level = self._fg_level[src.index] if src.index < len(self._fg_level) else None
        if level is None:
            return valid
        fg = np.zeros(data.shape[1:], dtype=bool)
        for band, lev in zip(data, level):
            fg |= band > lev
        return fg if valid is None else fg & valid

    def _fit(self, src: _Source) -> None:
        """Normalisation statistics, noise scale and foreground level of one file."""
        if self._is_windowed(src):
            data, valid = self._sample_windows(src)
        else:
            loaded = self._load(src)
            data, valid = loaded.hr, loaded.valid
        if valid is not None and not valid.any():
            raise DataError(f"{src.name}: every pixel is nodata")
        level = None
        if self._uses_foreground(src):
            level = []
            for band in data:
                v = band[valid] if valid is not None else band.ravel()
                lo, hi = (float(v.min()), float(np.percentile(v, 99))) if v.size else (0.0, 0.0)
                level.append(lo + self.foreground_threshold * (hi - lo))
            level = np.asarray(level, dtype=np.float32)
        self._fg_level.append(level)
        fit_mask = self._foreground(src, data, valid)
        if fit_mask is not None and not fit_mask.any():
            fit_mask = valid
        self.stats.append(self.normalizer.fit(data, fit_mask))
        robust = []
        for band in data:
            v = np.abs(band[valid] if valid is not None else band.ravel())
            robust.append(float(np.percentile(v, 99)) if v.size else 1.0)
        self._robust.append(np.asarray(robust, dtype=np.float32))
        if src.index in self._cache:  # the good mask needs the foreground level computed above
            loaded = self._cache[src.index]
            loaded.good = self._foreground(src, loaded.hr, loaded.valid)

    def _sample_windows(
        self, src: _Source, per_axis: int = 4, size: int = 256
    ) -> tuple[np.ndarray, np.ndarray]:
        """Values of a grid of windows spread over a large raster, for statistics with bounded memory."""
        axes = []
        for n, p in zip(src.shape, src.patch):
            w = min(n, max(size, p))
            starts = np.unique(np.linspace(0, n - w, per_axis).round().astype(int)) if p > 1 else [0]
            axes.append([(int(a), int(a) + w) for a in starts])
        datas, valids = [], []
        for window in _product(axes):
            data, valid = self._read(src, window)
            datas.append(data.reshape(data.shape[0], -1))
            valids.append(np.ones(datas[-1].shape[1], bool) if valid is None else valid.ravel())
        return np.concatenate(datas, axis=1), np.concatenate(valids)

    def _load(self, src: _Source) -> _Loaded:
        """The whole file (and its precomputed low-resolution twin), through the LRU cache."""
        cached = self._cache.get(src.index)
        if cached is not None:
            self._cache.move_to_end(src.index)
            return cached
        hr, valid = self._read(src, None)
        lr = lr_valid = None
        if self._precompute:
            lr, lr_valid = self._degrade(hr, valid, self.degradation)
        loaded = _Loaded(hr, valid, None, lr, lr_valid)
        if src.index < len(self._fg_level):
            loaded.good = self._foreground(src, hr, valid)
        self._cache[src.index] = loaded
        total = sum(v.nbytes for v in self._cache.values())
        while total > self.max_cached_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            total -= dropped.nbytes
        if loaded.nbytes > self.max_cached_bytes:
            logger.info(
                "%s (%d MB) exceeds the cache budget but is read whole", src.name, loaded.nbytes >> 20
            )
        return loaded

    def _degrade(
        self, hr: np.ndarray, valid: np.ndarray | None, deg: Degradation
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Degrade a ``(C, *S)`` file-axes array; slices along the slice axis are degraded in 2D."""
        x = torch.from_numpy(hr)
        v = torch.from_numpy(valid) if valid is not None else None
        sliced = x.ndim - 1 != self.spatial_dims
        with torch.no_grad():
            if sliced:
                xb = x.movedim(1 + self.slice_axis, 0)
                vb = v.movedim(self.slice_axis, 0)[:, None] if v is not None else None
            else:
                xb = x[None]
                vb = v[None, None] if v is not None else None
            if vb is None:
                yb, lvb = deg.apply(xb), None
            else:
                yb, lvb = deg.apply_masked(xb, vb, fill=float("nan"))  # zeroed after normalisation
            if sliced:
                y = yb.movedim(0, 1 + self.slice_axis)
                lv = lvb[:, 0].movedim(0, self.slice_axis) if lvb is not None else None
            else:
                y, lv = yb[0], (lvb[0, 0] if lvb is not None else None)
        lr = np.ascontiguousarray(y.numpy(), dtype=np.float32)
        lr_valid = None if lv is None else np.ascontiguousarray(lv.numpy())
        return lr, lr_valid

    # ------------------------------------------------------------------------------- patches
    def _grid_counts(self, src: _Source) -> list[list[int]]:
        stride = _file_axes(self.spatial_dims, len(src.shape), self.slice_axis, self._grid_stride)
        out = []
        for n, p, st in zip(src.shape, src.patch, stride):
            starts = list(range(0, n - p + 1, st))
            if starts[-1] != n - p:
                starts.append(n - p)
            out.append(starts)
        return out

    def _region(
        self, src: _Source, start: Sequence[int], shift: Sequence[int], deg: Degradation
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray | None]:
        """``(gt, valid, good, lq, lq_valid)`` for a patch at ``start`` (gt crop moved back by ``shift``)."""
        stop = [a + p for a, p in zip(start, src.patch)]
        gt_sl = tuple(slice(a - sh, b - sh) for a, b, sh in zip(start, stop, shift))
        lr_sl = tuple(slice(a // s, b // s) for a, b, s in zip(start, stop, src.scale))
        if not self._is_windowed(src):
            loaded = self._load(src)
            gt = loaded.hr[(slice(None), *gt_sl)]
            valid = loaded.valid[gt_sl] if loaded.valid is not None else None
            good = loaded.good[gt_sl] if loaded.good is not None else None
            if deg is self.degradation and loaded.lr is not None:
                lq = loaded.lr[(slice(None), *lr_sl)]
                lq_valid = loaded.lr_valid[lr_sl] if loaded.lr_valid is not None else None
                return gt, valid, good, lq, lq_valid
            hr, hr_valid, offset = self._window_with_margin(src, start, stop, loaded=loaded)
        else:
            hr, hr_valid, offset = self._window_with_margin(src, start, stop)
            inner = tuple(slice(o, o + p) for o, p in zip(offset, src.patch))
            gt = hr[(slice(None), *inner)]
            valid = hr_valid[inner] if hr_valid is not None else None
            good = self._foreground(src, gt, valid)
        lr, lr_valid = self._degrade(hr, hr_valid, deg)
        lo = tuple(slice(o // s, o // s + p // s) for o, p, s in zip(offset, src.patch, src.scale))
        lq = lr[(slice(None), *lo)]
        lq_valid = lr_valid[lo] if lr_valid is not None else None
        return gt, valid, good, lq, lq_valid

    def _window_with_margin(
        self, src: _Source, start: Sequence[int], stop: Sequence[int], *, loaded: _Loaded | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
        """HR window around a patch with the blur margin (clamped to the file); offset of the patch in it."""
        margin = _file_axes(self.spatial_dims, len(src.shape), self.slice_axis, self._margin)
        window = [(max(0, a - m), min(n, b + m)) for a, b, m, n in zip(start, stop, margin, src.shape)]
        offset = tuple(a - w[0] for a, w in zip(start, window))
        if loaded is not None:
            region = tuple(slice(a, b) for a, b in window)
            hr = np.ascontiguousarray(loaded.hr[(slice(None), *region)])
            valid = loaded.valid[region] if loaded.valid is not None else None
            return hr, valid, offset
        hr, valid = self._read(src, window)
        return hr, valid, offset

    def _random_position(
        self, rng: np.random.Generator, src: _Source
    ) -> tuple[tuple[int, ...], np.ndarray | None, tuple[np.ndarray, ...] | None]:
        start = tuple(
            int(s * rng.integers(0, (n - p) // s + 1)) for n, p, s in zip(src.shape, src.patch, src.scale)
        )
        return start, None, None

    def _valid_fraction(self, src: _Source, start: Sequence[int]) -> float | None:
        """Valid foreground fraction of a patch, or None when it needs a read (windowed)."""
        if self._is_windowed(src):
            return None
        loaded = self._load(src)
        if loaded.good is None:
            return 1.0
        region = tuple(slice(a, a + p) for a, p in zip(start, src.patch))
        return float(loaded.good[region].mean())

    def _augmentation(
        self, rng: np.random.Generator, src: _Source, start: Sequence[int]
    ) -> tuple[list[int], list[bool]]:
        """A permutation of the patch axes (within groups of equal scale, spacing and size) and flips."""
        d = self.spatial_dims
        file_axes = [a for a in range(len(src.shape)) if len(src.shape) == d or a != self.slice_axis]
        spacing = src.meta.spacing
        keys = [
            (self.scale[i], round(float(spacing[a]), 4) if a < len(spacing) else 0.0, self.patch_size[i])
            for i, a in enumerate(file_axes)
        ]
        perm = list(range(d))
        for key in set(keys):
            members = [i for i in range(d) if keys[i] == key]
            if len(members) > 1:
                shuffled = list(rng.permutation(members))
                for m, t in zip(members, shuffled):
                    perm[m] = int(t)
        flips = [bool(rng.integers(2)) for _ in range(d)]
        if self.degradation.convention == "origin":
            # a flip moves the HR crop back by s - 1 voxels: impossible at the start of the file
            flips = [f and (s == 1 or start[a] >= s) for f, s, a in zip(flips, self.scale, file_axes)]
        return perm, flips

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        deg = self.degradation
        augment = self.augment and self.mode == "random"
        if self.mode == "grid":
            f = int(np.searchsorted(self._grid_cum, index, side="right") - 1)
            src = self.sources[f]
            grid = self._grid[f]
            local = np.unravel_index(index - self._grid_cum[f], [len(g) for g in grid])
            start = tuple(int(g[i]) for g, i in zip(grid, local))
        else:
            f = int(rng.choice(len(self.sources), p=self._file_p))
            src = self.sources[f]
            start, best = None, -1.0
            for _ in range(self.max_tries):
                candidate, _, _ = self._random_position(rng, src)
                frac = self._valid_fraction(src, candidate)
                if frac is None:  # windowed: judged after reading
                    start = candidate
                    break
                if frac > best:
                    start, best = candidate, frac
                if frac >= self.min_valid:
                    break
            assert start is not None
            if self._jitter:
                deg = deg.randomized(rng)
        d = self.spatial_dims
        file_axes = [a for a in range(len(src.shape)) if len(src.shape) == d or a != self.slice_axis]
        perm, flips = self._augmentation(rng, src, start) if augment else (list(range(d)), [False] * d)
        shift = [0] * len(src.shape)
        if deg.convention == "origin":
            for i, a in enumerate(file_axes):
                if flips[i]:
                    shift[a] = src.scale[a] - 1
        gt, valid, good, lq, lq_valid = self._region(src, start, shift, deg)
        if self.mode == "random" and self._is_windowed(src) and self.min_valid > 0:
            # windowed sources are judged after reading; retry a few positions, keep the best
            tries = 1
            frac = 1.0 if good is None else float(good.mean())
            best_result = (frac, start, (gt, valid, good, lq, lq_valid))
            while frac < self.min_valid and tries < self.max_tries:
                candidate, _, _ = self._random_position(rng, src)
                result = self._region(src, candidate, shift, deg)
                frac = 1.0 if result[2] is None else float(result[2].mean())
                tries += 1
                if frac > best_result[0]:
                    best_result = (frac, candidate, result)
            _, start, (gt, valid, good, lq, lq_valid) = best_result
        # Per-item work is done in numpy: small tensor ops under torch's intra-op threads are many
        # times slower on a busy machine (measured 15x with 2 threads on 2 shared cores).
        gt = np.asarray(gt, dtype=np.float32)
        lq = np.asarray(lq, dtype=np.float32)
        mask = np.ones((1, *gt.shape[1:]), np.float32) if valid is None else valid[None].astype(np.float32)
        if len(src.shape) != d:
            gt, lq, mask = (a.squeeze(1 + self.slice_axis) for a in (gt, lq, mask))
        level = float(rng.uniform(*self._noise_range)) if self.mode == "random" else 0.0
        if level > 0:
            sigma = (level * self._robust[f]).reshape(-1, *([1] * d)).astype(np.float32)
            noisy = lq + sigma * rng.standard_normal(lq.shape, dtype=np.float32)
            if self.noise_kind == "rician":
                imag = sigma * rng.standard_normal(lq.shape, dtype=np.float32)
                noisy = np.sqrt(noisy**2 + imag**2)
            lq = noisy
        stats = self.stats[f]
        gt = self.normalizer.apply(gt, stats) * mask
        lq = np.nan_to_num(self.normalizer.apply(lq, stats), nan=0.0)
        if augment:
            flip_axes = tuple(1 + i for i in range(d) if flips[i])
            order = (0, *(1 + p for p in perm))
            gt, lq, mask = (np.transpose(np.flip(a, flip_axes), order) for a in (gt, lq, mask))
        return {
            "lq": torch.from_numpy(np.ascontiguousarray(lq, dtype=np.float32)),
            "gt": torch.from_numpy(np.ascontiguousarray(gt, dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)),
            "location": torch.tensor([f, *start], dtype=torch.int64),
        }


def _product(axes: Sequence[Sequence[Any]]) -> list[list[Any]]:
    out: list[list[Any]] = [[]]
    for choices in axes:
        out = [[*prefix, c] for prefix in out for c in choices]
    return out
