"""Where to sample: patch positions (file index, start, stop) drawn at random or laid on a grid.

In the manner of torchgeo's samplers, these classes only yield *queries*; a
:class:`~aesr_sci.data.source.PairSource` answers them with arrays. :class:`RandomPositions` draws
positions on multiples of the scale (so the low-resolution crop is exact), :class:`GridPositions`
lays a regular grid over every file (validation), and :class:`StepSampler` with :class:`GlobalIndex`
hands the training loop the global sample indices of its steps, so a resumed run draws the same
patches as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from torch.utils.data import Dataset, Sampler

__all__ = ["GlobalIndex", "GridPositions", "Position", "RandomPositions", "StepSampler"]


class Position(NamedTuple):
    """One patch: which file, and its start and stop per file axis (high-resolution voxels)."""

    file: int
    start: tuple[int, ...]
    stop: tuple[int, ...]


def _stop(start: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    return tuple(a + p for a, p in zip(start, patch))


class RandomPositions:
    """Random patch positions: a file drawn in proportion to its size, a start on multiples of the scale.

    Parameters
    ----------
    shapes, patches, scales
        Per file: the spatial shape (cropped to a multiple of the scale), the patch and the scale,
        each one number per file axis.
    """

    def __init__(
        self,
        shapes: Sequence[Sequence[int]],
        patches: Sequence[Sequence[int]],
        scales: Sequence[Sequence[int]],
    ) -> None:
        self.shapes, self.patches, self.scales = list(shapes), list(patches), list(scales)
        weights = np.array([math.prod(s) for s in self.shapes], dtype=np.float64)
        self.file_p = weights / weights.sum()

    def file(self, rng: np.random.Generator) -> int:
        """A file index, drawn in proportion to the files' sizes."""
        return int(rng.choice(len(self.shapes), p=self.file_p))

    def position(self, rng: np.random.Generator, file: int) -> Position:
        """A random position in ``file``, starting on multiples of the scale."""
        shape, patch, scale = self.shapes[file], self.patches[file], self.scales[file]
        start = tuple(int(s * rng.integers(0, (n - p) // s + 1)) for n, p, s in zip(shape, patch, scale))
        return Position(file, start, _stop(start, patch))


class GridPositions:
    """A regular grid of patches covering every file (the last patch on each axis flush with the end).

    Parameters
    ----------
    shapes, patches
        Per file: the spatial shape and the patch, one number per file axis.
    strides
        Per file: the step between patches per file axis.
    """

    def __init__(
        self,
        shapes: Sequence[Sequence[int]],
        patches: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
    ) -> None:
        self.patches = list(patches)
        self.starts = [
            [_axis_starts(n, p, st) for n, p, st in zip(shape, patch, stride)]
            for shape, patch, stride in zip(shapes, patches, strides)
        ]
        self.offsets = np.cumsum([0] + [math.prod(len(a) for a in g) for g in self.starts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> Position:
        f = int(np.searchsorted(self.offsets, index, side="right") - 1)
        grid = self.starts[f]
        local = np.unravel_index(index - self.offsets[f], [len(g) for g in grid])
        start = tuple(int(g[i]) for g, i in zip(grid, local))
        return Position(f, start, _stop(start, self.patches[f]))


def _axis_starts(n: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, n - patch + 1, stride))
    if starts[-1] != n - patch:
        starts.append(n - patch)
    return starts


class GlobalIndex(Dataset):
    """Maps a global sample index ``g`` to item ``g % N`` of epoch ``g // N`` of the base dataset."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.n = len(base)

    def __len__(self) -> int:  # pragma: no cover - sampled by index only
        return 2**62

    def __getitem__(self, g: int) -> Any:
        epoch, i = divmod(int(g), self.n)
        self.base.set_epoch(epoch)
        return self.base[i]


class StepSampler(Sampler[int]):
    """Global sample indices for steps ``start..stop`` of this rank, batch by batch."""

    def __init__(self, *, start: int, stop: int, batch_size: int, rank: int, world: int) -> None:
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, batch_size, rank, world

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.stop):
            first = (step * self.world + self.rank) * self.batch
            yield from range(first, first + self.batch)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.batch
