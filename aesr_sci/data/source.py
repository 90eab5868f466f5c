"""The pair source: aligned high- and low-resolution arrays read from NIfTI and GeoTIFF files.

A :class:`PairSource` answers the queries of :mod:`aesr_sci.data.positions`: given a file and a
patch start it returns the arrays of the pair, keyed by role (``gt``, ``valid``, ``good``, ``lq``,
``lq_valid``). It owns everything about the files:

* **Reading and caching.** Files that fit in ``max_cached_bytes`` are read whole, with their
  low-resolution twin computed once with the full degradation (exact for k-space, whose truncation
  is not local). A per-worker LRU cache keeps whole files up to the budget.
* **Windows with margins.** Larger rasters are read by windows with a margin covering the blur
  kernel and degraded window by window, which gives the same values as the whole file with bounded
  memory. The last window read is kept, so judging a position and pairing it read once.
* **Degradation.** Nodata pixels never bleed into valid low-resolution pixels (see
  :meth:`~aesr_sci.data.degrade.Degradation.apply_masked`); 3D files cut into 2D slices are degraded
  slice by slice.
* **Statistics.** Per file, through :func:`~aesr_sci.data.normalize.fit_statistics` under the
  dataset's mask policy: the normalisation statistics, the noise scale (99th percentile of
  ``|x|``) and the foreground level that marks the ``good`` voxels (valid and foreground).

**Guides (Wald's protocol).** A guided source pairs each target file with its guide file(s) on the
output grid (checked by :func:`~aesr_sci.guide.check_guide`). Several guide files of one target
(finest first, e.g. Sentinel-2's 10 m and 20 m bands guiding its 60 m bands) are joined on the
finest grid by :func:`~aesr_sci.guide.upsample_guide` (linear, DSen2's choice; local, so windows
join exactly as whole files). The guide window of a patch is the target's window times the scale;
it is degraded by the same degradation as the target, which puts it on the target's own grid:
the ``guide`` role has the ``gt`` patch's shape, and training needs no data finer than the product.
Guides have their own statistics, fitted on their degraded twin under the same policy.
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

from ..errors import DataError, MismatchError
from ..guide import check_guide, guide_factor, upsample_guide
from ..spatial import Image, SpatialMeta, per_axis
from .degrade import Degradation
from .normalize import Normalizer, fit_statistics, foreground_level, foreground_mask

__all__ = [
    "GuideFile",
    "PairSource",
    "SourceInfo",
    "check_content",
    "check_sources",
    "inspect_sources",
    "parse_patch",
    "value_range",
]

logger = logging.getLogger(__name__)

DEFAULT_CACHE = 384 * 2**20

Window = Sequence[tuple[int, int]]


@dataclass
class GuideFile:
    """One guide file of a target, read on its own grid and brought onto the finest guide's grid."""

    name: str
    path: str | None
    image: Image | None
    meta: SpatialMeta
    channels: int
    shape: tuple[int, ...]  # spatial extent used, on its own grid (file axes)
    factor: tuple[int, ...]  # per file axis, from its grid onto the finest guide's (1 for the finest)
    file_shape: tuple[int, ...]  # spatial shape on disk


@dataclass
class SourceInfo:
    """One input file (or in-memory image) checked against the patch and the scale."""

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
    guides: tuple[GuideFile, ...] = ()  # the guide files, finest first (none: not guided)

    @property
    def guide_channels(self) -> int:
        """Bands of the joined guide (0: not guided)."""
        return sum(g.channels for g in self.guides)

    @property
    def nbytes(self) -> int:
        voxels, up = math.prod(self.shape), math.prod(self.scale)
        n = self.channels * voxels * 4
        guide = self.guide_channels * voxels * 4 * (up + 1) + (up + 1) * voxels if self.guides else 0
        return n + n // max(up, 1) + 2 * voxels + guide


@dataclass
class _Loaded:
    gt: np.ndarray  # (C, *S) float32
    valid: np.ndarray | None  # (*S) bool, None = all valid
    good: np.ndarray | None  # valid and foreground, None = all
    lq: np.ndarray | None  # (C, *S / scale) float32, None when degraded on the fly
    lq_valid: np.ndarray | None
    guide: np.ndarray | None = None  # (G, *S): the joined guide degraded onto the target's grid
    guide_valid: np.ndarray | None = None
    guide_hr: np.ndarray | None = None  # (G, *S * scale): kept when the guide is degraded on the fly
    guide_hr_valid: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        arrays = (self.gt, self.valid, self.good, self.lq, self.lq_valid, self.guide, self.guide_valid)
        arrays += (self.guide_hr, self.guide_hr_valid)
        return sum(a.nbytes for a in arrays if a is not None)


def _name(src: Any, index: int) -> str:
    return f"<image {index}>" if isinstance(src, Image) else os.fspath(src)


def _read_meta(src: Any) -> tuple[SpatialMeta, tuple[int, ...]]:
    if isinstance(src, Image):
        return src.meta, tuple(int(n) for n in src.data.shape)
    from .. import io as aio

    meta, shape = aio.read_meta(os.fspath(src))
    return meta, tuple(int(n) for n in shape)


def file_axes(spatial_dims: int, file_dims: int, slice_axis: int, values: Sequence[int]) -> tuple[int, ...]:
    """Per-axis values of the patch space mapped onto the file's axes (1 on the slice axis)."""
    values = tuple(values)
    if file_dims == spatial_dims:
        return values
    out = list(values)
    out.insert(slice_axis, 1)
    return tuple(out)


def parse_patch(patch_size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    return per_axis(patch_size, spatial_dims, name="patch_size")


def inspect_sources(
    paths: Sequence[Any],
    *,
    spatial_dims: int,
    patch_size: int | Sequence[int],
    scale: Sequence[int],
    slice_axis: int,
    guides: Sequence[Any] | None = None,
) -> list[SourceInfo]:
    """Validate the sources (and their guides, one entry per source) against the patch and scale;
    raise DataError (MismatchError for a guide off the grid) naming the file and sizes."""
    paths, patch, scale = _check_request(paths, spatial_dims, patch_size, scale, guides)
    sources = [
        _inspect_source(
            index, src, spatial_dims, patch, scale, slice_axis, None if guides is None else guides[index]
        )
        for index, src in enumerate(paths)
    ]
    _check_same_bands(sources)
    return sources


def _check_request(
    paths: Sequence[Any],
    spatial_dims: int,
    patch_size: int | Sequence[int],
    scale: Sequence[int],
    guides: Sequence[Any] | None,
) -> tuple[Sequence[Any], tuple[int, ...], tuple[int, ...]]:
    """:func:`inspect_sources`'s arguments checked before any file is read: the sources as a list,
    the patch and the scale per axis (the patch divisible by the scale)."""
    if spatial_dims not in (2, 3):
        raise DataError(f"spatial_dims must be 2 or 3 (got {spatial_dims})")
    if isinstance(paths, (str, os.PathLike, Image)):
        paths = [paths]
    if len(paths) == 0:
        raise DataError("no input files: give at least one NIfTI or GeoTIFF path")
    if guides is not None and len(guides) != len(paths):
        raise DataError(f"{len(guides)} guide entries for {len(paths)} files: give one guide entry per file")
    patch = parse_patch(patch_size, spatial_dims)
    scale = tuple(int(s) for s in scale)
    bad = [(p, s) for p, s in zip(patch, scale) if p % s]
    if bad:
        raise DataError(
            f"patch_size {list(patch)} is not divisible by the scale {list(scale)}: use multiples of the "
            f"scale, e.g. {[max(s, p // s * s) for p, s in zip(patch, scale)]}"
        )
    return paths, patch, scale


def _inspect_source(
    index: int,
    src: Any,
    spatial_dims: int,
    patch: Sequence[int],
    scale: Sequence[int],
    slice_axis: int,
    guide: Any,
) -> SourceInfo:
    """One source (with its guide entry, or None) read as metadata and checked against the patch
    and scale on its own axes."""
    name = _name(src, index)
    meta, shape = _read_meta(src)
    file_dims = len(shape) - 1
    if file_dims < spatial_dims:
        raise DataError(f"{name}: a {file_dims}D image cannot give {spatial_dims}D patches")
    if file_dims > spatial_dims and not 0 <= slice_axis < file_dims:
        raise DataError(f"{name}: slice_axis must be in 0..{file_dims - 1} (got {slice_axis})")
    fscale = file_axes(spatial_dims, file_dims, slice_axis, scale)
    fpatch = file_axes(spatial_dims, file_dims, slice_axis, patch)
    spatial = shape[1:]
    cropped = tuple(n - n % s for n, s in zip(spatial, fscale))
    guide_files: tuple[GuideFile, ...] = ()
    if guide is not None:
        guide_files, cropped = _inspect_guides(name, meta, spatial, fscale, guide, index)
    if any(c < p for c, p in zip(cropped, fpatch)):
        raise DataError(
            f"{name}: spatial size {list(spatial)} is smaller than the patch {list(fpatch)} "
            f"(after cropping to a multiple of the scale {list(fscale)}); use a smaller patch_size"
        )
    path = None if isinstance(src, Image) else os.fspath(src)
    image = src if isinstance(src, Image) else None
    return SourceInfo(
        index, name, path, image, meta, shape[0], cropped, fscale, fpatch, tuple(spatial), guide_files
    )


def _check_same_bands(sources: Sequence[SourceInfo]) -> None:
    """Refuse sources with different band counts, or guides with different band counts."""
    channels = sorted({s.channels for s in sources})
    if len(channels) > 1:
        detail = ", ".join(f"{s.name}: {s.channels}" for s in sources)
        raise DataError(f"files have different band/channel counts ({detail}): use files with the same bands")
    if len({s.guide_channels for s in sources}) > 1:
        detail = ", ".join(f"{s.guides[0].name}: {s.guide_channels}" for s in sources)
        raise DataError(
            f"guides have different band counts ({detail}): give guides with the same bands, in the same order"
        )


def _inspect_guides(
    name: str, meta: SpatialMeta, spatial: Sequence[int], fscale: Sequence[int], entry: Any, index: int
) -> tuple[tuple[GuideFile, ...], tuple[int, ...]]:
    """The guide files of one target checked against its grid (finest first), and the target's extent
    that all of them cover, cropped to a multiple of the scale."""
    entry = [entry] if isinstance(entry, (str, os.PathLike, Image)) else list(entry)
    if not entry:
        raise DataError(f"{name}: its guide entry names no file: give at least one guide")
    found = []
    extent = tuple(spatial)
    for g in entry:
        gname = f"<guide {index}>" if isinstance(g, Image) else os.fspath(g)
        gmeta, gshape = _read_meta(g)
        factor = guide_factor(found[0][1], gmeta, guide_name=gname) if found else (1,) * len(fscale)
        if len(factor) != len(fscale) or any(s % f for s, f in zip(fscale, factor)):
            raise MismatchError(
                f"{gname}: its pixels are {list(factor)} times the first guide's, which does not divide the "
                f"scale {list(fscale)} of {name}: give guides whose pixel sizes divide the target's"
            )
        rel = tuple(s // f for s, f in zip(fscale, factor))
        label = f"{gname} (guide of {name})"
        grid = check_guide(meta, gmeta, rel, target_shape=spatial, guide_shape=gshape, guide_name=label)
        extent = tuple(min(e, b) for e, (_, b) in zip(extent, grid.target_window))
        found.append((g, gmeta, gshape, factor, rel, gname))
    extent = tuple(n - n % s for n, s in zip(extent, fscale))
    files = tuple(
        GuideFile(
            gname,
            None if isinstance(g, Image) else os.fspath(g),
            g if isinstance(g, Image) else None,
            gmeta,
            gshape[0],
            tuple(n * r for n, r in zip(extent, rel)),
            factor,
            tuple(gshape[1:]),
        )
        for g, gmeta, gshape, factor, rel, gname in found
    )
    return files, extent


def check_sources(
    paths: Sequence[Any],
    *,
    spatial_dims: int,
    patch_size: int | Sequence[int],
    scale: int | Sequence[int],
    slice_axis: int = 2,
    guides: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Check that files can feed a :class:`~aesr_sci.data.dataset.PairDataset` before training, reading metadata only.

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
    guides
        Guided data: one entry per path, a guide file (or image) on the output grid or a list of
        them, finest first; each is checked with :func:`~aesr_sci.guide.check_guide`.

    Returns
    -------
    dict
        ``files``, ``channels``, ``spatial_dims``, ``shapes`` (spatial, per file), ``formats``,
        ``spacings``, ``voxels`` (total), ``band_names`` and ``dtype`` (of the first file),
        ``guide_channels`` (0 without guides), ``guide_band_names`` (the joined guide's, of the
        first file), ``guide_files`` (every guide path), ``guide_factors`` (each guide file's pixel
        size over the first guide's, per axis) and ``text`` (a one-line summary).

    Raises
    ------
    DataError
        Empty list, patch not divisible by the scale, a file smaller than the patch or of the wrong
        dimensionality, files (or guides) with different band counts (the message names the file and sizes).
    MismatchError
        A guide off the target's grid (CRS, pixel size, corner: names both files and the fix).
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
    scale_t = per_axis(scale, spatial_dims)
    sources = inspect_sources(
        paths,
        spatial_dims=spatial_dims,
        patch_size=patch_size,
        scale=scale_t,
        slice_axis=slice_axis,
        guides=guides,
    )
    patch = parse_patch(patch_size, spatial_dims)
    voxels = sum(math.prod(s.shape) for s in sources)
    n, c = len(sources), sources[0].channels
    text = (
        f"{n} file{'s' if n != 1 else ''}, {c} channel{'s' if c != 1 else ''}, {spatial_dims}D patches of "
        f"{list(patch)} at scale {list(scale_t)}, {voxels} voxels"
    )
    first = sources[0].guides
    if first:
        text += f", guided by {sources[0].guide_channels} band(s)"
    return {
        "files": n,
        "channels": c,
        "spatial_dims": spatial_dims,
        "shapes": [list(s.shape) for s in sources],
        "formats": [s.meta.format for s in sources],
        "spacings": [list(s.meta.spacing) for s in sources],
        "voxels": voxels,
        "band_names": list(sources[0].meta.band_names),
        "dtype": sources[0].meta.dtype,
        "guide_channels": sources[0].guide_channels,
        "guide_band_names": [n for g in first for n in (g.meta.band_names or ("",) * g.channels)],
        "guide_files": [g.path for s in sources for g in s.guides if g.path is not None],
        "guide_factors": [list(g.factor) for g in first],  # each guide file's pixels over the finest's
        "text": text,
    }


def value_range(data: np.ndarray, valid: np.ndarray | None) -> tuple[int, float, float]:
    """``(count, min, max)`` of the finite valid values of a ``(C, *S)`` array (min > max when none)."""
    values = data[:, valid] if valid is not None else data
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0, math.inf, -math.inf
    return int(finite.size), float(finite.min()), float(finite.max())


def check_content(name: str, count: int, low: float, high: float) -> None:
    """Refuse a file with no valid value, or whose valid values are all equal (nothing to learn).

    Raises
    ------
    DataError
        Naming the file and the fix.
    """
    if count == 0:
        raise DataError(
            f"{name}: no valid value (every pixel is nodata, NaN or Inf): remove it from the data"
        )
    if low == high:
        raise DataError(
            f"{name}: every valid value is {low:g}, so there is nothing to learn: remove it from the data, "
            "or check that it was written correctly"
        )


class PairSource:
    """Aligned (gt, lq) arrays of the files, by window or from the cache, with per-file statistics.

    Parameters
    ----------
    sources
        The files, from :func:`inspect_sources`.
    spatial_dims
        Dimensionality of the patches (2 on 3D files: slices along ``slice_axis``).
    slice_axis
        Slice axis of 3D files when ``spatial_dims == 2``.
    degradation
        The nominal degradation; a randomised copy may be passed to :meth:`pair`.
    normalizer, policy, foreground_threshold
        How statistics are fitted (see :func:`~aesr_sci.data.normalize.fit_statistics`).
    max_cached_bytes
        Memory budget for whole files (per worker, LRU); larger rasters are read by windows.
        Files degraded by kspace, and in-memory images, are always whole.

    Raises
    ------
    DataError
        A file whose every pixel is nodata, or whose valid pixels are all equal (nothing to learn).
    """

    def __init__(
        self,
        sources: Sequence[SourceInfo],
        *,
        spatial_dims: int,
        slice_axis: int,
        degradation: Degradation,
        normalizer: Normalizer,
        policy: str,
        foreground_threshold: float,
        max_cached_bytes: int = DEFAULT_CACHE,
    ) -> None:
        self.sources = list(sources)
        self.spatial_dims, self.slice_axis = spatial_dims, slice_axis
        self.degradation, self.normalizer = degradation, normalizer
        self.policy, self.threshold = policy, float(foreground_threshold)
        self.max_cached_bytes = int(max_cached_bytes)
        self.jitter = float(degradation.params.get("sigma_jitter", 0.0))
        self._precompute = degradation.method == "kspace" or self.jitter == 0.0
        self.margin = self._margins()
        self._cache: OrderedDict[int, _Loaded] = OrderedDict()
        self._last_window: tuple[Any, tuple[np.ndarray, np.ndarray | None]] | None = None
        self.stats: list[dict[str, Any]] = []
        self.guide_stats: list[dict[str, Any] | None] = []  # None for a file without guide
        self.robust: list[np.ndarray] = []
        self.levels: list[np.ndarray | None] = []
        for src in self.sources:
            self._fit(src)

    def _margins(self) -> tuple[int, ...]:
        """Margin (multiple of the scale) around a window so that its degradation is exact inside."""
        deg = self.degradation
        scale = deg.scale_for(self.spatial_dims)
        if deg.method == "kspace":
            return (0,) * self.spatial_dims
        out = []
        for r, s in zip(deg.support_radius(self.spatial_dims), scale):
            r = math.ceil(r * (1.0 + self.jitter)) + (1 if self.jitter else 0)
            out.append(math.ceil(r / s) * s)
        return tuple(out)

    @property
    def guided(self) -> bool:
        """Whether the files come with guides."""
        return bool(self.sources and self.sources[0].guides)

    def windowed(self, src: SourceInfo) -> bool:
        """Whether ``src`` is read by windows (too large for the cache) rather than whole."""
        if src.image is not None or self.degradation.method == "kspace":
            return False
        return src.nbytes > self.max_cached_bytes

    # -------------------------------------------------------------------------------- reading
    def read(
        self, src: SourceInfo | GuideFile, window: Window | None
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

    def read_guide(self, src: SourceInfo, window: Window | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The joined guide of ``src`` over ``window`` (per file axis, in pixels of the finest guide;
        None: the whole extent), float32 ``(G, *w)``, valid where every guide file is valid.

        A coarser guide file is read with one pixel of margin, brought onto the finest grid by
        :func:`~aesr_sci.guide.upsample_guide` and cropped, which gives the whole file's values.
        """
        if window is None:
            window = [(0, n * s) for n, s in zip(src.shape, src.scale)]
        parts, masks = [], []
        for g in src.guides:
            pad = [int(f > 1) for f in g.factor]
            coarse = [
                (max(0, a // f - m), min(n, -(-b // f) + m))
                for (a, b), f, m, n in zip(window, g.factor, pad, g.shape)
            ]
            data, valid = upsample_guide(*self.read(g, coarse), g.factor)
            region = tuple(slice(a - c * f, b - c * f) for (a, b), (c, _), f in zip(window, coarse, g.factor))
            parts.append(data[(slice(None), *region)])
            masks.append(None if valid is None else valid[region])
        present = [m for m in masks if m is not None]
        mask = np.logical_and.reduce(present) if present else None
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32), mask

    def _load(self, src: SourceInfo) -> _Loaded:
        """The whole file (and its precomputed low-resolution twin), through the LRU cache."""
        cached = self._cache.get(src.index)
        if cached is not None:
            self._cache.move_to_end(src.index)
            return cached
        gt, valid = self.read(src, None)
        lq = lq_valid = None
        if self._precompute:
            lq, lq_valid = self.degrade(gt, valid, self.degradation)
        level = self.levels[src.index] if src.index < len(self.levels) else None
        loaded = _Loaded(gt, valid, foreground_mask(gt, valid, level), lq, lq_valid)
        if src.guides:
            hr, hr_valid = self.read_guide(src, None)
            if self._precompute:  # the full-resolution guide is not needed again
                loaded.guide, loaded.guide_valid = self.degrade(hr, hr_valid, self.degradation)
            else:
                loaded.guide_hr, loaded.guide_hr_valid = hr, hr_valid
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

    def degrade(
        self, gt: np.ndarray, valid: np.ndarray | None, deg: Degradation
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Degrade a ``(C, *S)`` file-axes array; slices along the slice axis are degraded in 2D."""
        x = torch.from_numpy(gt)
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
        lq = np.ascontiguousarray(y.numpy(), dtype=np.float32)
        return lq, (None if lv is None else np.ascontiguousarray(lv.numpy()))

    # ----------------------------------------------------------------------------- statistics
    def _fit(self, src: SourceInfo) -> None:
        """Noise scale and foreground level of one file, and its normalisation statistics, fitted on
        its degraded twin as inference fits them on its low-resolution input."""
        faces = None
        if self.windowed(src):
            gt, valid, lq, lq_valid = self._sample_windows(src)
            faces = self._faces(src) if self.policy == "foreground" else None
        else:  # read once: the cache keeps it for the patches
            loaded = self._load(src)
            gt, valid, lq, lq_valid = loaded.gt, loaded.valid, loaded.lq, loaded.lq_valid
            if lq is None:
                lq, lq_valid = self.degrade(gt, valid, self.degradation)
        check_content(src.name, *value_range(gt, valid))
        level = None
        if self.policy == "foreground":
            level = foreground_level(gt, valid, threshold=self.threshold, faces=faces)
        self.levels.append(level)
        if src.index in self._cache:  # its good mask needs the level just fitted
            self._cache[src.index].good = foreground_mask(gt, valid, level)
        self.stats.append(
            fit_statistics(
                lq,
                lq_valid,
                normalizer=self.normalizer,
                policy=self.policy,
                threshold=self.threshold,
                level=level if faces is not None else None,  # a sample has not the file's faces
            )
        )
        values = gt[:, valid] if valid is not None else gt.reshape(gt.shape[0], -1)
        self.robust.append(np.percentile(np.abs(values), 99, axis=1).astype(np.float32))
        self.guide_stats.append(self._fit_guide(src) if src.guides else None)

    def _fit_guide(self, src: SourceInfo) -> dict[str, Any]:
        """Statistics of the joined guide, fitted on its degraded twin (the guide the network gets)."""
        if self.windowed(src):
            lq, lq_valid = self._sample_windows(src, guide=True)[2:]
        else:
            loaded = self._load(src)
            lq, lq_valid = loaded.guide, loaded.guide_valid
            if lq is None:
                lq, lq_valid = self.degrade(loaded.guide_hr, loaded.guide_hr_valid, self.degradation)
        check_content(f"{src.guides[0].name} (guide of {src.name})", *value_range(lq, lq_valid))
        return fit_statistics(
            lq, lq_valid, normalizer=self.normalizer, policy=self.policy, threshold=self.threshold
        )

    def _sample_windows(
        self, src: SourceInfo, per_axis: int = 4, size: int = 256, *, guide: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(gt, valid, lq, lq_valid)`` values, ``(C, N)`` and ``(N,)``, of a grid of windows spread
        over a large raster and of their degradation: statistics with bounded memory. ``guide``:
        of the joined guide over the same windows times the scale."""
        import itertools

        axes = []
        for n, p, s in zip(src.shape, src.patch, src.scale):
            w = min(n, max(size - size % s, p))
            starts = (
                np.unique(np.linspace(0, (n - w) // s, per_axis).round().astype(int)) * s if p > 1 else [0]
            )
            axes.append([(int(a), int(a) + w) for a in starts])
        parts: list[list[np.ndarray]] = [[], [], [], []]
        for window in itertools.product(*axes):
            if guide:
                gt, valid = self.read_guide(src, [(a * s, b * s) for (a, b), s in zip(window, src.scale)])
            else:
                gt, valid = self.read(src, window)
            lq, lq_valid = self.degrade(gt, valid, self.degradation)
            for part, (data, mask) in zip((parts[:2], parts[2:]), ((gt, valid), (lq, lq_valid))):
                part[0].append(data.reshape(data.shape[0], -1))
                part[1].append(np.ones(part[0][-1].shape[1], bool) if mask is None else mask.ravel())
        gt, valid, lq, lq_valid = (np.concatenate(p, axis=-1) for p in parts)
        return gt, valid, lq, lq_valid

    def _faces(self, src: SourceInfo) -> np.ndarray:
        """``(C, N)`` valid values of the file's outer faces (the background of MRI), read as thin windows."""
        values = []
        for axis, n in enumerate(src.shape):
            for a in (0, n - 1):
                window = [(0, m) for m in src.shape]
                window[axis] = (a, a + 1)
                data, valid = self.read(src, window)
                values.append(data[:, valid] if valid is not None else data.reshape(data.shape[0], -1))
        return np.concatenate(values, axis=1)

    # ------------------------------------------------------------------------------- patches
    def _margin_window(
        self, src: SourceInfo, start: Sequence[int], stop: Sequence[int], up: Sequence[int]
    ) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
        """The window around ``[start, stop) * up`` with the blur margin (clamped to the extent
        ``src.shape * up``), and the offset of the patch in it; ``up`` is 1 (target) or the scale (guide)."""
        margin = file_axes(self.spatial_dims, len(src.shape), self.slice_axis, self.margin)
        window = tuple(
            (max(0, a * u - m), min(n * u, b * u + m))
            for a, b, m, n, u in zip(start, stop, margin, src.shape, up)
        )
        return window, tuple(a * u - w[0] for a, u, w in zip(start, up, window))

    def _window_with_margin(
        self, src: SourceInfo, start: Sequence[int], stop: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
        """GT window around a patch with the blur margin (clamped to the file); offset of the patch in it."""
        window, offset = self._margin_window(src, start, stop, [1] * len(start))
        if not self.windowed(src):
            loaded = self._load(src)
            region = tuple(slice(a, b) for a, b in window)
            gt = np.ascontiguousarray(loaded.gt[(slice(None), *region)])
            return gt, (loaded.valid[region] if loaded.valid is not None else None), offset
        key = (src.index, window)
        if self._last_window is None or self._last_window[0] != key:
            self._last_window = (key, self.read(src, window))
        gt, valid = self._last_window[1]
        return gt, valid, offset

    def _degraded_crop(
        self,
        data: np.ndarray,
        valid: np.ndarray | None,
        deg: Degradation,
        offset: Sequence[int],
        size: Sequence[int],
        scale: Sequence[int],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Degrade a window and crop ``size`` degraded pixels at ``offset`` (window pixels) divided by the scale."""
        lq, lq_valid = self.degrade(data, valid, deg)
        lo = tuple(slice(o // s, o // s + n) for o, n, s in zip(offset, size, scale))
        return lq[(slice(None), *lo)], (lq_valid[lo] if lq_valid is not None else None)

    def valid_fraction(self, src: SourceInfo, start: Sequence[int]) -> float:
        """Fraction of valid foreground voxels of the patch at ``start`` (a windowed file is read)."""
        region = tuple(slice(a, a + p) for a, p in zip(start, src.patch))
        if not self.windowed(src):
            good = self._load(src).good
            return 1.0 if good is None else float(good[region].mean())
        gt, valid, offset = self._window_with_margin(src, start, [a + p for a, p in zip(start, src.patch)])
        inner = tuple(slice(o, o + p) for o, p in zip(offset, src.patch))
        good = foreground_mask(
            gt[(slice(None), *inner)], None if valid is None else valid[inner], self.levels[src.index]
        )
        return 1.0 if good is None else float(good.mean())

    def pair(
        self, src: SourceInfo, start: Sequence[int], deg: Degradation, *, shift: Sequence[int] | None = None
    ) -> dict[str, np.ndarray | None]:
        """The pair at ``start`` keyed by role: ``gt``, ``valid``, ``good`` (high-resolution grid),
        ``lq``, ``lq_valid`` (low-resolution grid), and for a guided source ``guide``, ``guide_valid``
        (the guide degraded onto the ``gt`` grid, cropped where ``gt`` is). ``shift`` moves the gt
        crop back (origin convention under flips); ``deg`` may be a randomised copy of the nominal
        degradation, and degrades the target and its guide alike."""
        shift = shift or [0] * len(start)
        out = self._target_pair(src, start, deg, shift)
        if src.guides:
            out |= self._guide_pair(src, [a - sh for a, sh in zip(start, shift)], deg)
        return out

    def _target_pair(
        self, src: SourceInfo, start: Sequence[int], deg: Degradation, shift: Sequence[int]
    ) -> dict[str, np.ndarray | None]:
        stop = [a + p for a, p in zip(start, src.patch)]
        gt_sl = tuple(slice(a - sh, b - sh) for a, b, sh in zip(start, stop, shift))
        level = self.levels[src.index]
        if not self.windowed(src):
            loaded = self._load(src)
            out = {
                "gt": loaded.gt[(slice(None), *gt_sl)],
                "valid": loaded.valid[gt_sl] if loaded.valid is not None else None,
                "good": loaded.good[gt_sl] if loaded.good is not None else None,
            }
            if deg is self.degradation and loaded.lq is not None:
                lq_sl = tuple(slice(a // s, b // s) for a, b, s in zip(start, stop, src.scale))
                out["lq"] = loaded.lq[(slice(None), *lq_sl)]
                out["lq_valid"] = loaded.lq_valid[lq_sl] if loaded.lq_valid is not None else None
                return out
        window, window_valid, offset = self._window_with_margin(src, start, stop)
        if self.windowed(src):
            inner = tuple(slice(o - sh, o - sh + p) for o, sh, p in zip(offset, shift, src.patch))
            valid = window_valid[inner] if window_valid is not None else None
            gt = window[(slice(None), *inner)]
            out = {"gt": gt, "valid": valid, "good": foreground_mask(gt, valid, level)}
        low = [p // s for p, s in zip(src.patch, src.scale)]
        out["lq"], out["lq_valid"] = self._degraded_crop(window, window_valid, deg, offset, low, src.scale)
        return out

    def _guide_pair(
        self, src: SourceInfo, start: Sequence[int], deg: Degradation
    ) -> dict[str, np.ndarray | None]:
        """The joined guide's window ``[start, start + patch) * scale`` degraded by ``deg`` onto the
        target's grid (Wald's protocol), from the cache or read by windows."""
        loaded = None if self.windowed(src) else self._load(src)
        if loaded is not None and loaded.guide is not None:  # precomputed with the nominal degradation
            region = tuple(slice(a, a + p) for a, p in zip(start, src.patch))
            valid = loaded.guide_valid
            return {
                "guide": loaded.guide[(slice(None), *region)],
                "guide_valid": None if valid is None else valid[region],
            }
        stop = [a + p for a, p in zip(start, src.patch)]
        window, offset = self._margin_window(src, start, stop, src.scale)
        if loaded is None:
            data, valid = self.read_guide(src, window)
        else:
            region = tuple(slice(a, b) for a, b in window)
            data = np.ascontiguousarray(loaded.guide_hr[(slice(None), *region)])  # type: ignore[index]
            valid = None if loaded.guide_hr_valid is None else loaded.guide_hr_valid[region]
        guide, guide_valid = self._degraded_crop(data, valid, deg, offset, src.patch, src.scale)
        return {"guide": guide, "guide_valid": guide_valid}
