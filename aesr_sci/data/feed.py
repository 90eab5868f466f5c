"""What a recipe's data section feeds training: its files, their checks, the degradation and the dataset.

The training engine asks this module for everything it draws from ``recipe.data``: the training
and validation files (globs expanded, the split made by file, never by patch), their guides
(:func:`resolve_guides`: ``data.guides`` and ``data.val_guides`` paired with the targets entry by
entry, globs expanded in the same sorted order), the checks made
before any training (:func:`check_data_files` reads metadata only; :func:`check_content` reads the
pixels, for ``aesr-sci train --check``), and the :class:`~aesr_sci.data.degrade.Degradation`,
:class:`~aesr_sci.data.normalize.Normalizer` and :class:`~aesr_sci.data.dataset.PairDataset` built
from it.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import RecipeError
from ..spatial import METHODS

if TYPE_CHECKING:
    from ..recipe import Recipe
    from .dataset import PairDataset
    from .degrade import Degradation
    from .normalize import Normalizer

__all__ = [
    "build_dataset",
    "build_degradation",
    "build_normalizer",
    "check_content",
    "check_data_files",
    "expand_patterns",
    "resolve_files",
    "resolve_guides",
]

_STRIP_BYTES = 256 * 2**20  # content checks read larger files in strips of about this size


def expand_patterns(patterns: Sequence[str], key: str, source: str) -> list[str]:
    """Files matching ``patterns`` (globs or paths), in order, without duplicates.

    Raises
    ------
    RecipeError
        A pattern that matches no file, naming the recipe key.
    """
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            what = "matches no file" if glob.has_magic(pattern) else "no such file"
            raise RecipeError(f"{source}: {key}: {pattern!r} {what}")
        files.extend(matches)
    return list(dict.fromkeys(files))


def resolve_files(recipe: Recipe) -> tuple[list[str], list[str]]:
    """Training and validation files: globs expanded, the split made by file (never by patch).

    With no ``data.paths`` the default sample is used (its own train and validation slabs). A
    guided recipe's guides are paired here too, so that a count mismatch stops at once (see
    :func:`resolve_guides`, which gives the guides of either split).
    """
    source = recipe.source or "recipe"
    d = recipe.data
    _guide_table(recipe)
    if not d.paths:
        from .template import sample_paths

        if d.val_paths:
            raise RecipeError(f"{source}: data.val_paths needs data.paths as well")
        return sample_paths("train"), sample_paths("val")
    files = expand_patterns(d.paths, "data.paths", source)
    if d.val_paths:
        val = expand_patterns(d.val_paths, "data.val_paths", source)
        held_out = {os.path.abspath(v) for v in val}
        train_files = [f for f in files if os.path.abspath(f) not in held_out]
        if not train_files:
            raise RecipeError(
                f"{source}: every file of data.paths is also in data.val_paths: nothing left to train on"
            )
        return train_files, val
    if len(files) < 2:
        raise RecipeError(
            f"{source}: data.paths: validation holds out whole files, so give at least 2 files "
            f"(got {len(files)}), or name validation files in data.val_paths"
        )
    n_val = min(len(files) - 1, max(1, round(d.val_fraction * len(files))))
    order = np.random.default_rng(recipe.train.seed).permutation(len(files))
    val = sorted(files[i] for i in order[:n_val])
    return [f for f in files if f not in val], val


def resolve_guides(recipe: Recipe, files: Sequence[str]) -> list[tuple[str, ...]] | None:
    """The guide files of each of ``files`` (from :func:`resolve_files`), in order; None without guides.

    Entry ``i`` of ``data.guides`` guides entry ``i`` of ``data.paths`` (``data.val_guides`` the
    ``data.val_paths``); a glob is expanded in sorted order, as its target's, and the ``k``-th match
    guides the ``k``-th target. An entry that is a list gives several guide files per target
    (finest first), each a glob of its own.

    Raises
    ------
    RecipeError
        A guide pattern matching another number of files than its target's (one line naming both
        patterns and counts), or a file without a guide.
    """
    table = _guide_table(recipe)
    if table is None:
        return None
    missing = [f for f in files if os.path.abspath(f) not in table]
    if missing:
        raise RecipeError(
            f"{recipe.source or 'recipe'}: {missing[0]} has no guide: name it in data.paths with its guide "
            "in data.guides (or in data.val_paths with data.val_guides)"
        )
    return [table[os.path.abspath(f)] for f in files]


def _guide_table(recipe: Recipe) -> dict[str, tuple[str, ...]] | None:
    """Each target file (absolute path) with its guide files, or None for a recipe without guides."""
    source, d = recipe.source or "recipe", recipe.data
    if not d.guides:
        return None
    table: dict[str, tuple[str, ...]] = {}
    for key, paths, guides_key, guides in (
        ("data.paths", d.paths, "data.guides", d.guides),
        ("data.val_paths", d.val_paths, "data.val_guides", d.val_guides),
    ):
        for number, (pattern, entry) in enumerate(zip(paths, guides), start=1):
            targets = expand_patterns([pattern], key, source)
            columns = []
            for guide in entry if isinstance(entry, list) else [entry]:
                matches = expand_patterns([guide], guides_key, source)
                if len(matches) != len(targets):
                    raise RecipeError(
                        f"{source}: {guides_key}: entry {number} {guide!r} matches {len(matches)} file(s) but "
                        f"{key} entry {number} {pattern!r} matches {len(targets)}: give one guide file per "
                        "target file (globs pair in sorted order)"
                    )
                columns.append(matches)
            for k, target in enumerate(targets):
                table.setdefault(os.path.abspath(target), tuple(column[k] for column in columns))
    return table


def build_degradation(recipe: Recipe) -> Degradation:
    """The recipe's degradation model (method, per-axis scale, parameters)."""
    from .degrade import Degradation

    d = recipe.data
    return Degradation(method=d.degradation.method, scale=d.scale_tuple(), params=d.degradation.params())


def build_normalizer(recipe: Recipe) -> Normalizer:
    """The recipe's intensity normalisation."""
    from .normalize import Normalizer

    return Normalizer.from_dict(recipe.data.normalization.model_dump())


def build_dataset(recipe: Recipe, files: Sequence[str], *, mode: str, seed: int) -> PairDataset:
    """The :class:`~aesr_sci.data.dataset.PairDataset` of ``files``: ``"random"`` for training
    (augmentation and noise as the recipe says), ``"grid"`` for a deterministic sweep; with their
    guides (:func:`resolve_guides`) for a guided recipe, whose items then carry ``guide``."""
    from .dataset import PairDataset

    d = recipe.data
    noise_kind = d.degradation.noise_kind or METHODS[d.degradation.method].noise
    return PairDataset(
        list(files),
        guides=resolve_guides(recipe, files),
        spatial_dims=d.spatial_dims,
        patch_size=d.patch_tuple(),
        degradation=build_degradation(recipe),
        normalizer=build_normalizer(recipe),
        mode=mode,
        samples_per_epoch=d.samples_per_epoch,
        min_valid=d.min_valid,
        augment=d.augment and mode == "random",
        noise=d.degradation.noise if mode == "random" else 0.0,
        noise_kind=noise_kind,
        slice_axis=2 if d.slice_axis is None else d.slice_axis,
        seed=seed,
    )


def check_data_files(recipe: Recipe, train_files: Sequence[str], val_files: Sequence[str]) -> dict[str, Any]:
    """Check sizes and band counts of the resolved files, and each (target, guide) pair, from their metadata.

    Returns
    -------
    dict
        :func:`~aesr_sci.data.source.check_sources`'s summary (with ``guide_channels``,
        ``guide_band_names`` and ``guide_files`` for a guided recipe), plus ``statistics``: the mask
        policy the normalisation is fitted with (``{"policy", "threshold"}``), for ``model.json``;
        and for guides ``guide_statistics``: they are normalised by their own statistics, fitted
        under the same policy (on the degraded guide in training, on the guide given at inference).

    Raises
    ------
    RecipeError, DataError, MismatchError
        Guides that do not pair with the files, or lie off their grid (one line naming both files
        and the ``gdalwarp`` fix), or whose band counts differ.
    """
    from .normalize import FOREGROUND_THRESHOLD, statistics_policy
    from .source import check_sources

    d = recipe.data
    files = [*train_files, *val_files]
    summary = check_sources(
        files,
        guides=resolve_guides(recipe, files),
        spatial_dims=d.spatial_dims,
        patch_size=d.patch_tuple(),
        scale=d.scale_tuple(),
        slice_axis=2 if d.slice_axis is None else d.slice_axis,
    )
    if d.channels is not None and d.channels != int(summary["channels"]):
        raise RecipeError(
            f"{recipe.source or 'recipe'}: data.channels is {d.channels} but the files have {summary['channels']} "
            "band(s): remove data.channels or give matching files"
        )
    policy = statistics_policy(summary["formats"][: len(train_files)])
    summary["statistics"] = {"policy": policy, "threshold": FOREGROUND_THRESHOLD}
    if summary["guide_channels"]:  # the guide's own statistics, fitted the same way on the guide
        summary["guide_statistics"] = dict(summary["statistics"])
    return summary


def check_content(files: Sequence[str]) -> None:
    """Read every pixel of ``files``: truncated, corrupt, all-NaN, all-nodata or constant files fail here.

    Files larger than about 256 MB are read in strips, so memory stays bounded.

    Raises
    ------
    FileReadError
        A truncated or corrupt file.
    DataError
        NaN or Inf in valid pixels, no valid pixel, or every valid value equal (the message names
        the file).
    """
    from .source import check_content as check_values
    from .source import value_range

    for path in files:
        count, low, high = 0, math.inf, -math.inf
        for data, valid in _strips(path):
            n, lo, hi = value_range(data, valid)
            count, low, high = count + n, min(low, lo), max(high, hi)
        check_values(path, count, low, high)


def _strips(path: str) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The file's ``(data, valid)`` in strips along its first axis (whole when small)."""
    from .. import io as aio

    _meta, shape = aio.read_meta(path)
    row_bytes = 4 * math.prod(shape) // max(shape[1], 1)
    rows = max(1, _STRIP_BYTES // max(row_bytes, 1))
    for first in range(0, shape[1], rows):
        window = None
        if rows < shape[1]:
            window = [(first, min(shape[1], first + rows)), *((0, n) for n in shape[2:])]
        image = aio.read(path, window=window)
        yield np.asarray(image.data), image.mask
