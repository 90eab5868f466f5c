"""The MNI152 T1 template that ships inside nilearn's wheel, cut into the default sample. No download.

The template is one volume, so to keep validation honest (never scored on voxels it trained on) it
is cut into two non-overlapping slabs along the superior-inferior axis, written as two NIfTI files
with their exact affines: the lower 60 % (cerebellum, brainstem, temporal lobes, basal ganglia) for
training and the upper 40 % (cortex, ventricles' roofs) for validation. At the cut each slab fades
smoothly to background over 12 mm (a raised-cosine ramp), as a real scan's field of view ends in
air: a hard cut through the brain would wrap around the periodic field of view of k-space
truncation and ring, which no real acquisition does. Real experiments should use files split by
subject, as the recipes for ``../shared/data`` do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FileReadError

if TYPE_CHECKING:
    from ..spatial import Image

__all__ = ["sample_dir", "sample_paths"]

log = logging.getLogger(__name__)

_VERSION = "v2"
_FADE = 12  # voxels over which each slab fades to background at the cut
_TRAIN_FRACTION = 0.6


def sample_dir() -> Path:
    """Where the sample files are cached (``$AESR_SCI_CACHE`` or ``~/.cache/aesr-sci``)."""
    root = os.environ.get("AESR_SCI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "aesr-sci"
    )
    return Path(root) / f"sample-{_VERSION}"


def sample_paths(split: str = "all") -> list[str]:
    """Paths of the default sample files, written on first use from nilearn's bundled template.

    Parameters
    ----------
    split
        ``"train"``, ``"val"`` or ``"all"``.

    Raises
    ------
    FileReadError
        If nilearn is not installed (``pip install 'aesr-sci[sample]'``).

    Examples
    --------
    >>> train, = sample_paths("train")  # doctest: +SKIP
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be train, val or all (got {split!r})")
    directory = sample_dir()
    names = {"train": "mni152_t1_inferior.nii.gz", "val": "mni152_t1_superior.nii.gz"}
    paths = {k: directory / v for k, v in names.items()}
    if not all(p.is_file() for p in paths.values()):
        _write_sample(directory, paths)
    chosen = ["train", "val"] if split == "all" else [split]
    return [str(paths[k]) for k in chosen]


def _write_sample(directory: Path, paths: dict[str, Path]) -> None:
    try:
        from nilearn.datasets import load_mni152_template
    except ImportError:
        raise FileReadError(
            "the default sample needs nilearn, which carries the MNI152 template: "
            "pip install 'aesr-sci[sample]' (or give data.paths in the recipe)"
        ) from None
    from ..io import write

    img = load_mni152_template(resolution=1)
    data = np.asarray(img.get_fdata(dtype=np.float32))
    affine = np.asarray(img.affine, dtype=np.float64)
    # the superior-inferior axis: the voxel axis whose column points most along world z
    axis = int(np.argmax(np.abs(affine[2, :3])))
    n = data.shape[axis]
    cut = round(n * _TRAIN_FRACTION)
    directory.mkdir(parents=True, exist_ok=True)
    inferior_first = affine[2, axis] > 0
    pieces = (
        {"train": (0, cut), "val": (cut, n)}
        if inferior_first
        else {"train": (n - cut, n), "val": (0, n - cut)}
    )
    for key, (start, stop) in pieces.items():
        write(_slab(data, affine, axis, start, stop), paths[key], overwrite=True)
    log.info("wrote the default sample to %s", directory)


def _slab(data: np.ndarray, affine: np.ndarray, axis: int, start: int, stop: int) -> Image:
    """Voxels ``start:stop`` along ``axis`` of the template, as an image on its own affine, faded to
    background towards the cut face."""
    from ..spatial import Image, SpatialMeta

    index = [slice(None)] * 3
    index[axis] = slice(start, stop)
    shift = np.zeros(4)
    shift[axis] = start
    shift[3] = 1.0
    piece_affine = affine.copy()
    piece_affine[:3, 3] = affine[:3, :] @ shift
    meta = SpatialMeta(
        piece_affine,
        dtype="float32",
        format="nifti",
        provenance={
            "source": "MNI152 T1 template (nilearn, load_mni152_template(resolution=1))",
            "slab": f"voxels {start}:{stop} along axis {axis}",
        },
    )
    piece = np.array(data[tuple(index)], dtype=np.float32)
    _fade_cut_face(piece, axis, at_start=start > 0)
    meta = meta.with_provenance(fade=f"raised-cosine fade to 0 over {_FADE} voxels at the cut face")
    return Image(piece[np.newaxis], meta)


def _fade_cut_face(piece: np.ndarray, axis: int, *, at_start: bool) -> None:
    """Fade ``piece`` in place to background towards its cut face (its start or its end along
    ``axis``; not towards the original field of view's edge), a raised cosine over ``_FADE`` voxels."""
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(_FADE) + 0.5) / _FADE)
    shape = [1, 1, 1]
    shape[axis] = _FADE
    view = [slice(None)] * 3
    view[axis] = slice(0, _FADE) if at_start else slice(piece.shape[axis] - _FADE, None)
    piece[tuple(view)] *= (ramp if at_start else ramp[::-1]).reshape(shape)
