"""The training and validation dataset: where to sample, a pair source, and the assembly of items.

:class:`PairDataset` is a map-style :class:`torch.utils.data.Dataset` that composes the three roles
of :mod:`aesr_sci.data`: positions (:mod:`~aesr_sci.data.positions`, random or on a grid), the pair
source that answers them (:mod:`~aesr_sci.data.source`: reading, caching, windows, degradation,
statistics) and the assembly of one item (:mod:`~aesr_sci.data.item`: augmentation, noise,
normalisation). Items are dicts keyed by role (``lq``, ``gt``, ``mask``, ``location``, and
``guide`` for guided data).

* **Guided data (Wald's protocol).** With ``guides``, each file comes with its guide file(s) on the
  output grid; the item's ``guide`` is the guide window (the target's window times the scale)
  degraded by the same degradation, so it lies on the ``gt`` grid: the network learns
  ``(lq, guide) -> gt`` from the product itself, as DSen2 does.

* **Deterministic.** Item ``i`` of epoch ``e`` draws everything (file, position, augmentation, noise,
  blur jitter) from a generator seeded with ``(seed, e, i)``, so batches are identical whatever
  ``num_workers`` is, workers need no seeding, and ``DistributedSampler`` shards work unchanged.
  Call :meth:`PairDataset.set_epoch` each epoch.
* **Exact pairs.** Patches start on multiples of the scale, so ``lq`` is exactly the degradation of
  the file seen through the patch, whether the file is cached whole or read by windows.
* **Masks.** Nodata pixels get ``mask = 0``. Random patches with less than ``min_valid`` valid
  foreground are drawn again (up to ``max_tries``, then the best is kept), by one loop for cached
  and windowed files.
* **Augmentation respects the physics**: flips along any axis, and axis permutations (hence
  90-degree rotations) only among axes with the same scale, voxel spacing and patch size; an
  anisotropic axis (scale ``(1, 1, 4)``) is never swapped with another. For the ``"origin"``
  convention (k-space) a flip shifts the high-resolution crop by ``s - 1`` so the pair stays
  aligned.
* ``spatial_dims=2`` on 3D volumes samples 2D slices along ``slice_axis``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..spatial import METHODS
from .degrade import Degradation
from .item import Augmentation, assemble
from .normalize import FOREGROUND_THRESHOLD, STATISTICS_POLICIES, Normalizer, statistics_policy
from .positions import GridPositions, Position, RandomPositions
from .source import (
    DEFAULT_CACHE,
    PairSource,
    SourceInfo,
    check_sources,
    file_axes,
    inspect_sources,
    parse_patch,
)

__all__ = ["PairDataset", "check_sources"]


def _check_sampling(mode: str, samples_per_epoch: int, min_valid: float) -> None:
    """Refuse an unknown mode, an empty epoch or a valid fraction outside ``[0, 1]``."""
    if mode not in ("random", "grid"):
        raise DataError(f"mode must be 'random' or 'grid' (got {mode!r})")
    if samples_per_epoch < 1:
        raise DataError(f"samples_per_epoch must be >= 1 (got {samples_per_epoch})")
    if not 0.0 <= min_valid <= 1.0:
        raise DataError(f"min_valid must be in [0, 1] (got {min_valid})")


def _noise_range(noise: float | tuple[float, float]) -> tuple[float, float]:
    """The ``(low, high)`` noise levels of a level or a range, refusing negative or reversed ones."""
    low_high = (float(noise), float(noise)) if np.isscalar(noise) else tuple(float(v) for v in noise)  # type: ignore[arg-type]
    if len(low_high) != 2 or not 0 <= low_high[0] <= low_high[1]:
        raise DataError(f"noise must be a level >= 0 or a (low, high) range (got {noise!r})")
    return low_high  # type: ignore[return-value]


@contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one thread while an item is assembled, the caller's thread count restored after.

    An item's tensors are small (a patch and its margin), so each operation costs less than waking
    torch's other threads; with ``num_workers=0`` the items are made in the training process, whose
    threads are all on, and on a busy machine each small operation then waits for a descheduled
    thread (sentinel2_x2's blur jitter degrades every window: 18 times the CPU per item on two
    loaded cores). DataLoader workers already run on one thread.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class PairDataset(Dataset):
    """Aligned (lq, gt) patch pairs from NIfTI volumes and GeoTIFF rasters, for training and validation.

    Parameters
    ----------
    paths
        NIfTI or GeoTIFF paths, read through :mod:`aesr_sci.io` (in-memory
        :class:`~aesr_sci.spatial.Image` objects are accepted too).
    guides
        Guided data: one entry per path, a guide on the output grid (a path or image) or a list of
        them, finest first (coarser ones are brought onto the finest grid, see
        :func:`~aesr_sci.guide.upsample_guide`). None: no guide.
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
    policy
        The mask policy of the statistics and of ``min_valid``: ``"foreground"`` (MRI air is not
        foreground) or ``"valid"``; default foreground for NIfTI files, valid otherwise (see
        :func:`~aesr_sci.data.normalize.fit_statistics`).
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
    guide_stats
        The guides' own statistics per file (None entries without guides), fitted on the degraded guide.
    guide_channels
        Bands of the (joined) guide; 0 without guides.
    policy
        The mask policy the statistics were fitted with (recorded in ``model.json``).
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
        guides: Sequence[Any] | None = None,
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
        policy: str | None = None,
        foreground_threshold: float = FOREGROUND_THRESHOLD,
        max_cached_bytes: int = DEFAULT_CACHE,
        seed: int = 0,
    ) -> None:
        _check_sampling(mode, samples_per_epoch, min_valid)
        slice_axis = 2 if slice_axis is None else int(slice_axis)
        if not isinstance(degradation, Degradation):
            degradation = Degradation.from_dict(degradation)
        self.degradation = degradation
        self.normalizer = Normalizer.from_dict(normalizer)
        self.spatial_dims, self.slice_axis = spatial_dims, slice_axis
        self.scale = degradation.scale_for(spatial_dims)
        self.sources = self._inspect(paths, guides, patch_size)
        self.guide_channels = self.sources[0].guide_channels
        self.patch_size = parse_patch(patch_size, spatial_dims)
        self.mode = mode
        self.samples_per_epoch = int(samples_per_epoch)
        self.min_valid = float(min_valid)
        self.max_tries = max(1, int(max_tries))
        self.augment = bool(augment) and mode == "random"
        self._noise_range = _noise_range(noise)
        self.noise_kind = noise_kind or METHODS[degradation.method].noise
        self.policy = self._mask_policy(policy)
        self.seed = int(seed)
        self.epoch = 0
        self.pairs = self._pair_source(foreground_threshold, max_cached_bytes)
        self.stats = self.pairs.stats
        self.guide_stats = self.pairs.guide_stats
        self.positions = self._make_positions(grid_stride)

    def _inspect(
        self, paths: Sequence[Any], guides: Sequence[Any] | None, patch_size: Any
    ) -> list[SourceInfo]:
        """The files and their guides, checked against the patch size and the scale (:func:`check_sources`)."""
        return inspect_sources(
            paths,
            spatial_dims=self.spatial_dims,
            patch_size=patch_size,
            scale=self.scale,
            slice_axis=self.slice_axis,
            guides=guides,
        )

    def _mask_policy(self, policy: str | None) -> str:
        """The policy given, else the default for the files' formats; an unknown one is refused."""
        resolved = policy or statistics_policy([s.meta.format for s in self.sources])
        if resolved not in STATISTICS_POLICIES:
            raise DataError(f"policy must be one of {', '.join(STATISTICS_POLICIES)} (got {policy!r})")
        return resolved

    def _pair_source(self, foreground_threshold: float, max_cached_bytes: int) -> PairSource:
        """The pair source of the files: reading, caching, windows, degradation and statistics."""
        return PairSource(
            self.sources,
            spatial_dims=self.spatial_dims,
            slice_axis=self.slice_axis,
            degradation=self.degradation,
            normalizer=self.normalizer,
            policy=self.policy,
            foreground_threshold=foreground_threshold,
            max_cached_bytes=max_cached_bytes,
        )

    def _make_positions(self, grid_stride: Any) -> RandomPositions | GridPositions:
        """Where to sample: a grid covering every file (grid mode), else random positions."""
        shapes = [s.shape for s in self.sources]
        patches = [s.patch for s in self.sources]
        if self.mode == "grid":
            stride = self._parse_stride(grid_stride)
            strides = [
                file_axes(self.spatial_dims, len(s.shape), self.slice_axis, stride) for s in self.sources
            ]
            return GridPositions(shapes, patches, strides)
        return RandomPositions(shapes, patches, [s.scale for s in self.sources])

    def _parse_stride(self, grid_stride: Any) -> tuple[int, ...]:
        if grid_stride is None:
            return self.patch_size
        stride = parse_patch(grid_stride, self.spatial_dims)
        if any(st % s for st, s in zip(stride, self.scale)):
            raise DataError(f"grid_stride {list(stride)} must be a multiple of the scale {list(self.scale)}")
        return stride

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which (with the seed and the item index) determines every random draw."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.positions) if isinstance(self.positions, GridPositions) else self.samples_per_epoch

    def _random_position(self, rng: np.random.Generator) -> Position:
        """A random position with at least ``min_valid`` valid foreground, else the best of ``max_tries``."""
        assert isinstance(self.positions, RandomPositions)
        f = self.positions.file(rng)
        src = self.sources[f]
        best, best_fraction = None, -1.0
        for _ in range(self.max_tries):
            candidate = self.positions.position(rng, f)
            fraction = self.pairs.valid_fraction(src, candidate.start)
            if fraction > best_fraction:
                best, best_fraction = candidate, fraction
            if fraction >= self.min_valid:
                break
        assert best is not None
        return best

    def _augmentation(self, rng: np.random.Generator, src: SourceInfo, start: Sequence[int]) -> Augmentation:
        """Flips, and permutations among patch axes of equal scale, spacing and size."""
        axes = self._patch_axes(src)
        spacing = src.meta.spacing
        groups = [
            (self.scale[i], round(float(spacing[a]), 4) if a < len(spacing) else 0.0, self.patch_size[i])
            for i, a in enumerate(axes)
        ]
        # origin convention: a flip moves the gt crop back by s - 1 voxels, impossible at the file's start
        origin = self.degradation.convention == "origin"
        flippable = [not origin or s == 1 or start[a] >= s for s, a in zip(self.scale, axes)]
        return Augmentation.draw(rng, groups, flippable)

    def _patch_axes(self, src: SourceInfo) -> list[int]:
        """The file axes that are patch axes (all but the slice axis of a sliced volume)."""
        n = len(src.shape)
        return [a for a in range(n) if n == self.spatial_dims or a != self.slice_axis]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        with _one_thread():
            return self._item(index)

    def _item(self, index: int) -> dict[str, torch.Tensor]:
        """Item ``index`` of the current epoch: its position, degradation, augmentation and noise."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.mode == "grid":
            position, deg = self.positions[index], self.degradation  # type: ignore[index]
        else:
            position = self._random_position(rng)
            deg = self.degradation.randomized(rng) if self.pairs.jitter else self.degradation
        src = self.sources[position.file]
        d = self.spatial_dims
        aug = self._augmentation(rng, src, position.start) if self.augment else Augmentation.identity(d)
        shift = [0] * len(src.shape)
        if deg.convention == "origin":
            for i, a in enumerate(self._patch_axes(src)):
                shift[a] = src.scale[a] - 1 if aug.flips[i] else 0
        pair = self.pairs.pair(src, position.start, deg, shift=shift)
        noise = None
        if self.mode == "random":
            level = float(rng.uniform(*self._noise_range))
            noise = {"level": level, "robust": self.pairs.robust[position.file], "kind": self.noise_kind}
        return assemble(
            pair,
            normalizer=self.normalizer,
            stats=self.stats[position.file],
            guide_stats=self.guide_stats[position.file],
            augmentation=aug,
            location=[position.file, *position.start],
            squeeze_axis=None if len(src.shape) == d else self.slice_axis,
            noise=noise,
            rng=rng,
        )
