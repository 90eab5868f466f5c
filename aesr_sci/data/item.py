"""The assembly of one training item from a pair: augmentation, noise and normalisation.

An item is a dict keyed by role, of plain tensors that the default collate stacks::

    {"lq": (C, *patch / scale) float32,   # degraded, noisy, normalised input
     "guide": (G, *patch) float32,        # guided data only: the guide degraded onto the gt grid,
                                          # normalised with its own statistics (Wald's protocol)
     "gt": (C, *patch) float32,           # normalised target (0 where invalid)
     "mask": (1, *patch) float32,         # 1 where the target (and the guide) is valid, 0 on nodata
     "location": int64 [file_index, start_0, ..., start_{D-1}]}   # one start per *file* axis

Every role is moved by the same :class:`Augmentation`. The work is done in numpy: small
tensor operations under torch's intra-op threads are many times slower on a busy machine (measured
15x with 2 threads on 2 shared cores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .normalize import Normalizer

__all__ = ["Augmentation", "add_noise", "assemble"]


@dataclass(frozen=True)
class Augmentation:
    """A permutation of the patch axes and a flip per axis, applied to every role alike.

    ``perm[i]`` is the source axis of output axis ``i``; flips are applied before the permutation.
    """

    perm: tuple[int, ...]
    flips: tuple[bool, ...]

    @classmethod
    def identity(cls, spatial_dims: int) -> Augmentation:
        """No flip, no permutation."""
        return cls(tuple(range(spatial_dims)), (False,) * spatial_dims)

    @classmethod
    def draw(cls, rng: np.random.Generator, groups: Sequence[Any], flippable: Sequence[bool]) -> Augmentation:
        """Random flips, and permutations only among axes whose ``groups`` keys are equal.

        Parameters
        ----------
        rng
            The item's generator.
        groups
            One hashable key per patch axis (for example scale, spacing and patch size): an axis is
            only ever swapped with an axis of the same key, so an anisotropic axis stays in place.
        flippable
            Per axis, whether a flip is allowed (the origin convention forbids one at a file's start).
        """
        d = len(groups)
        perm = list(range(d))
        for key in set(groups):
            members = [i for i in range(d) if groups[i] == key]
            if len(members) > 1:
                for m, t in zip(members, rng.permutation(members)):
                    perm[m] = int(t)
        flips = [bool(rng.integers(2)) for _ in range(d)]
        return cls(tuple(perm), tuple(f and ok for f, ok in zip(flips, flippable)))

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Flip and permute a channel-first ``(C, *patch)`` array."""
        flip_axes = tuple(1 + i for i, f in enumerate(self.flips) if f)
        return np.transpose(np.flip(array, flip_axes), (0, *(1 + p for p in self.perm)))


def add_noise(
    lq: np.ndarray, rng: np.random.Generator, *, level: float, robust: np.ndarray, kind: str
) -> np.ndarray:
    """Gaussian or Rician noise of standard deviation ``level * robust`` (per channel) on ``lq``."""
    if level <= 0:
        return lq
    sigma = (level * robust).reshape(-1, *([1] * (lq.ndim - 1))).astype(np.float32)
    noisy = lq + sigma * rng.standard_normal(lq.shape, dtype=np.float32)
    if kind == "rician":
        imag = sigma * rng.standard_normal(lq.shape, dtype=np.float32)
        noisy = np.sqrt(noisy**2 + imag**2)
    return noisy


def assemble(
    pair: dict[str, Any],
    *,
    normalizer: Normalizer,
    stats: dict[str, Any],
    guide_stats: dict[str, Any] | None = None,
    augmentation: Augmentation,
    location: Sequence[int],
    squeeze_axis: int | None = None,
    noise: dict[str, Any] | None = None,
    rng: np.random.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """One item from the arrays of a pair (see :meth:`~aesr_sci.data.source.PairSource.pair`).

    Parameters
    ----------
    pair
        ``gt`` and ``lq`` arrays in file axes, ``valid`` (None: all valid); for guided data
        ``guide`` (on the ``gt`` grid) and ``guide_valid``.
    normalizer, stats
        The normalisation and the file's statistics, applied to ``lq`` and ``gt``.
    guide_stats
        The statistics of the file's guide (guided data only).
    augmentation
        Applied to every role after normalisation.
    location
        ``[file_index, *start]``.
    squeeze_axis
        The spatial file axis of size 1 to drop (2D slices of volumes).
    noise
        ``{"level", "robust", "kind"}`` for :func:`add_noise` on ``lq`` (with ``rng``), or None.
    """
    gt = np.asarray(pair["gt"], dtype=np.float32)
    lq = np.asarray(pair["lq"], dtype=np.float32)
    valid = pair.get("valid")
    mask = np.ones((1, *gt.shape[1:]), np.float32) if valid is None else valid[None].astype(np.float32)
    guide = pair.get("guide")
    if guide is not None and pair.get("guide_valid") is not None:  # no loss where the guide has no data
        mask = mask * pair["guide_valid"][None]
    if squeeze_axis is not None:
        gt, lq, mask = (a.squeeze(1 + squeeze_axis) for a in (gt, lq, mask))
    if noise is not None and rng is not None:
        lq = add_noise(lq, rng, **noise)
    images = {
        "lq": np.nan_to_num(normalizer.apply(lq, stats), nan=0.0),
        "gt": normalizer.apply(gt, stats) * mask,
        "mask": mask,
    }
    if guide is not None:
        guide = np.asarray(guide, dtype=np.float32)
        guide = guide if squeeze_axis is None else guide.squeeze(1 + squeeze_axis)
        images["guide"] = np.nan_to_num(normalizer.apply(guide, guide_stats), nan=0.0)
    item = {
        role: torch.from_numpy(np.ascontiguousarray(augmentation.apply(a), dtype=np.float32))
        for role, a in images.items()
    }
    item["location"] = torch.tensor(list(location), dtype=torch.int64)
    return item
