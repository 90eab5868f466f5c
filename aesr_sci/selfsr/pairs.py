"""Training pairs from a thick-slice volume alone: in-plane patches degraded to look like the thick axis.

:class:`InPlanePairs` is a pair source in the shape of :class:`aesr_sci.data.sampler.PairDataset`:
a map-style dataset of plain-tensor dicts that the default collate stacks::

    {"lq": (C, p / scale, q) float32,   # one in-plane axis blurred by the slice profile and decimated
     "gt": (C, p, q) float32,           # the sharp in-plane patch
     "mask": (1, p, q) float32,         # 1 where the target is valid for the loss, 0 on nodata
     "location": int64 [0, start_0, start_1, start_2, degraded_axis]}   # starts per volume axis

Each patch lies in one thick slice (the planes where the volume is sharp along both in-plane
axes). Half the items degrade one in-plane axis, half the other, and the degraded axis always comes
first, so one 2D network learns to super-resolve the first axis of its input; at inference it is
applied across the thick axis (:func:`~aesr_sci.selfsr.geometry.combine_orientations`). The
low-resolution twin of every slice is computed once with the profile's ``slice`` degradation, and
patches start on multiples of the scale along the degraded axis, so ``lq`` is exactly the
degradation of the slice seen through the patch. Item ``i`` of epoch ``e`` draws everything from a
generator seeded with ``(seed, e, i)``; flips along either axis are the only augmentation
(an axis swap would mix the degraded axis with the sharp one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.normalize import (
    FOREGROUND_THRESHOLD,
    Normalizer,
    fit_statistics,
    foreground_level,
    foreground_mask,
)
from ..errors import DataError
from ..spatial import Image
from .geometry import SliceGeometry
from .profile import SliceProfile

__all__ = ["InPlanePairs"]


def _checked_patch(
    image: Image, geometry: SliceGeometry, s: int, patch_size: int | Sequence[int], samples_per_epoch: int
) -> tuple[int, ...]:
    """The patch size ``(p, q)`` of :class:`InPlanePairs`, its arguments checked first (a 3D volume
    with a thick axis, ``p`` a multiple of the scale ``s``, at least one sample per epoch)."""
    if geometry.axis is None or image.spatial_dims != 3:
        raise DataError("in-plane pairs need a 3D volume with a thick axis (see slice_geometry)")
    patch = (int(patch_size),) * 2 if np.isscalar(patch_size) else tuple(int(p) for p in patch_size)  # type: ignore[arg-type]
    if len(patch) != 2 or min(patch) < 1 or patch[0] % s:
        raise DataError(f"patch_size {list(patch)} must be two positive numbers, the first a multiple of {s}")
    if samples_per_epoch < 1:
        raise DataError(f"samples_per_epoch must be >= 1 (got {samples_per_epoch})")
    return patch


def _check_in_plane_size(image: Image, in_plane: Sequence[int], patch: Sequence[int], s: int) -> None:
    """Refuse a volume whose in-plane axes (cropped to a multiple of the scale ``s`` along the
    degraded one) are smaller than the patch."""
    shape = image.spatial_shape
    if any(shape[a] - shape[a] % s < patch[0] for a in in_plane) or any(
        shape[a] < patch[1] for a in in_plane
    ):
        raise DataError(
            f"the in-plane size {[shape[a] for a in in_plane]} is smaller than "
            f"the patch {list(patch)}: use a smaller patch_size"
        )


class InPlanePairs(Dataset):
    """(lq, gt) 2D patch pairs made from the in-plane axes of a thick-slice volume.

    Parameters
    ----------
    image
        The ``(C, X, Y, Z)`` volume the pairs are cut from.
    geometry
        The volume's thick axis and scale.
    profile
        The slice profile that degrades the in-plane axes (:func:`~aesr_sci.selfsr.profile.estimate_profile`).
    patch_size
        High-resolution patch size ``(p, q)`` (or one number), ``p`` along the degraded axis and a
        multiple of the scale.
    samples_per_epoch
        Length of an epoch.
    normalizer
        A :class:`~aesr_sci.data.normalize.Normalizer`, its dict or method name; default percentile,
        fitted once on the volume's foreground (:attr:`stats`).
    min_valid
        Minimum fraction of valid foreground pixels in a patch; positions are drawn again up to
        ``max_tries`` times, then the best is kept.
    max_tries
        Positions tried per item.
    foreground_threshold
        Foreground differs from the background by this fraction of the robust range in some
        channel (:func:`~aesr_sci.data.normalize.foreground_level`).
    augment
        Random flips along both axes.
    seed
        Base seed of the deterministic sampling.

    Raises
    ------
    DataError
        If the volume has no thick axis, or an in-plane axis is smaller than the patch.

    Examples
    --------
    >>> import numpy as np
    >>> from aesr_sci.spatial import SpatialMeta
    >>> from aesr_sci.selfsr import slice_geometry
    >>> img = Image(np.random.rand(1, 32, 32, 8).astype("float32"), SpatialMeta(np.diag([1, 1, 4.0, 1])))
    >>> geometry = slice_geometry(img.meta)
    >>> pairs = InPlanePairs(img, geometry, SliceProfile("box", 4.0, 4), patch_size=16, min_valid=0.0)
    >>> tuple(pairs[0]["lq"].shape), tuple(pairs[0]["gt"].shape)
    ((1, 4, 16), (1, 16, 16))
    """

    def __init__(
        self,
        image: Image,
        geometry: SliceGeometry,
        profile: SliceProfile,
        *,
        patch_size: int | Sequence[int],
        samples_per_epoch: int = 1000,
        normalizer: Normalizer | dict[str, Any] | str | None = None,
        min_valid: float = 0.5,
        max_tries: int = 10,
        foreground_threshold: float = FOREGROUND_THRESHOLD,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        patch = _checked_patch(image, geometry, profile.scale, patch_size, samples_per_epoch)
        self.geometry, self.profile, self.patch_size = geometry, profile, patch
        self.samples_per_epoch = int(samples_per_epoch)
        self.min_valid = float(min_valid)
        self.max_tries = max(1, int(max_tries))
        self.augment, self.seed, self.epoch = bool(augment), int(seed), 0
        self.normalizer = Normalizer.from_dict(normalizer)
        self.in_plane = geometry.in_plane
        _check_in_plane_size(image, self.in_plane, patch, profile.scale)
        self._fit(image, foreground_threshold)

    def _fit(self, image: Image, foreground_threshold: float) -> None:
        """The normalisation statistics (:attr:`stats`), fitted on the volume's foreground, and per
        in-plane direction the thick slices, their low-resolution twins and their masks."""
        data = np.asarray(image.data, dtype=np.float32)
        valid = (
            np.ones(image.spatial_shape, bool) if image.mask is None else np.asarray(image.common_mask, bool)
        )
        level = foreground_level(data, valid, threshold=foreground_threshold)
        good = foreground_mask(data, valid, level)
        data = np.where(valid[None], data, np.float32(0.0))
        self.stats = fit_statistics(data, valid, normalizer=self.normalizer, policy="foreground", level=level)
        # per in-plane direction: slices (T, C, degraded axis, other axis), their twins and masks
        directions = [
            self._direction(data, good, valid, a, masked=image.mask is not None) for a in self.in_plane
        ]
        self._hr, self._lq, self._good, self._valid = (list(d) for d in zip(*directions))

    def _direction(
        self, data: np.ndarray, good: np.ndarray, valid: np.ndarray, a: int, *, masked: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The thick slices with in-plane axis ``a`` first (cropped to a multiple of the scale) and their twins."""
        axis, s = self.geometry.axis, self.profile.scale
        other = 3 - a - axis  # type: ignore[operator]
        hr = np.moveaxis(data, (1 + axis, 0, 1 + a, 1 + other), (0, 1, 2, 3))  # type: ignore[operator]
        n = hr.shape[2] - hr.shape[2] % s
        hr = np.ascontiguousarray(hr[:, :, :n])
        g, v = (
            np.ascontiguousarray(np.moveaxis(m, (axis, a, other), (0, 1, 2))[:, :n]) for m in (good, valid)
        )
        deg = self.profile.degradation(spatial_dims=2, axis=0)
        with torch.no_grad():
            x = torch.from_numpy(hr)
            if masked:  # nodata never bleeds into valid pixels; pixels with no valid support: nan, then 0
                lq = deg.apply_masked(x, torch.from_numpy(v[:, None]), fill=float("nan"))[0]
            else:
                lq = deg.apply(x)
        return hr, lq.numpy(), g, v

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which (with the seed and the item index) determines every random draw."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _position(self, rng: np.random.Generator, d: int) -> tuple[int, int, int]:
        """A random (slice, start along the degraded axis, start along the other axis) of direction ``d``."""
        t_count, _, n, m = self._hr[d].shape
        (p, q), s = self.patch_size, self.profile.scale
        return (
            int(rng.integers(t_count)),
            s * int(rng.integers((n - p) // s + 1)),
            int(rng.integers(m - q + 1)),
        )

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        d = int(rng.integers(2))
        (p, q), s = self.patch_size, self.profile.scale
        best, best_frac = None, -1.0
        for _ in range(self.max_tries):
            t, a, b = self._position(rng, d)
            frac = float(self._good[d][t, a : a + p, b : b + q].mean())
            if frac > best_frac:
                best, best_frac = (t, a, b), frac
            if frac >= self.min_valid:
                break
        assert best is not None
        t, a, b = best
        gt = self._hr[d][t, :, a : a + p, b : b + q]
        lq = self._lq[d][t, :, a // s : (a + p) // s, b : b + q]
        mask = self._valid[d][t, a : a + p, b : b + q][None].astype(np.float32)
        gt = self.normalizer.apply(gt, self.stats) * mask
        lq = np.nan_to_num(self.normalizer.apply(lq, self.stats), nan=0.0)
        if self.augment:
            flips = tuple(1 + i for i in range(2) if rng.integers(2))
            gt, lq, mask = (np.flip(x, flips) for x in (gt, lq, mask))
        start = [0, 0, 0]
        start[self.geometry.axis], start[self.in_plane[d]], start[self.in_plane[1 - d]] = t, a, b  # type: ignore[index]
        return {
            "lq": torch.from_numpy(np.ascontiguousarray(lq, dtype=np.float32)),
            "gt": torch.from_numpy(np.ascontiguousarray(gt, dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)),
            "location": torch.tensor([0, *start, self.in_plane[d]], dtype=torch.int64),
        }
