"""Sentinel-2 products: one 10 m stack of every band from a product's 10, 20 and 60 m files.

:func:`sentinel2_stack` (the command line's ``aesr-sci sentinel2``) names each file's bands
(:func:`aesr_sci.guide.sentinel2_bands`), copies the 10 m bands as they are, sharpens the 20 m bands
with a guided x2 model (guided by the 10 m bands) and the 60 m bands with a guided x6 model (guided
by the 10 m and 20 m bands, :func:`aesr_sci.guide.sentinel2_plan`), and writes all bands in
wavelength order on the 10 m grid, with band descriptions B1, B2, ... B12. A 60 m file without an
x6 model is refused (leave it out to write the 10 and 20 m bands): a stack never silently lacks
bands that were given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MismatchError
from .spatial import Image

__all__ = ["sentinel2_stack"]


def _check_model(loaded: Any, plan: Any, name: str) -> None:
    """Refuse a model whose bands are not the plan's (targets in, guides beside), in one line."""
    targets, guides = [b.name for b in plan.targets], [b.name for b in plan.guides]
    if tuple(loaded.scale) != (plan.scale, plan.scale) or loaded.guide_channels != len(guides):
        raise MismatchError(
            f"{name}: {loaded.path} is not a guided x{plan.scale} Sentinel-2 model (scale {list(loaded.scale)}, "
            f"{loaded.guide_channels} guide band(s)): it must sharpen {', '.join(targets)} guided by "
            f"{', '.join(guides)} (recipes/sentinel2_guided_x{plan.scale}.yaml)"
        )
    if loaded.in_channels not in (1, len(targets)):
        raise MismatchError(
            f"{name}: {loaded.path} takes {loaded.in_channels} band(s) but the product has {len(targets)} "
            f"at {plan.targets[0].resolution} m ({', '.join(targets)})"
        )


def _sharpened(
    loaded: Any, plan: Any, options: dict[str, Any], adapt: float | None, **inference: bool
) -> tuple[Image, list[str]]:
    """The plan's target file upscaled by its model with its guide files (finest first), the model
    fine-tuned on them for ``adapt`` minutes first when given."""
    from .infer import upscale
    from .selfsupervised import adapt as fine_tune

    target = plan.targets[0].path
    guides = list(dict.fromkeys(b.path for b in plan.guides))
    if adapt is not None:
        keep = ("device", "precision", "progress")
        loaded = fine_tune(loaded, target, guide=guides, minutes=adapt, **{k: options[k] for k in keep})
    return upscale(target, loaded, guide=guides, **options, **inference), [b.name for b in plan.targets]


def sentinel2_stack(
    model_x2: Any,
    files: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    model_x6: Any = None,
    cog: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    precision: str = "auto",
    memory_budget: float | None = None,
    adapt: float | None = None,
    tta: bool = False,
    consistency: bool = False,
    progress: bool = False,
) -> Path:
    """Write a Sentinel-2 product's bands as one 10 m GeoTIFF, in wavelength order.

    Parameters
    ----------
    model_x2
        A guided x2 model (``recipes/sentinel2_guided_x2.yaml``): the 20 m bands from the 10 m ones.
    files
        The product's 10 m, 20 m and (with ``model_x6``) 60 m files, one per resolution, each band
        named by its description (B2, B05...) or the file name (see :func:`aesr_sci.guide.sentinel2_bands`).
    output
        The GeoTIFF to write (``cog``: a Cloud-Optimized GeoTIFF); never one of the inputs.
    model_x6
        A guided x6 model (``recipes/sentinel2_guided_x6.yaml``) for the 60 m bands.
    adapt
        Minutes to fine-tune a copy of each model on the product itself first
        (:func:`aesr_sci.adapt` with its guides, Wald's protocol); the model folders are left as
        they are.
    device, precision, memory_budget, tta, consistency, progress
        As :func:`aesr_sci.infer.upscale`.

    Returns
    -------
    Path
        ``output``: the 10 m file's grid (transform and CRS), cropped at the far end to whole 20 m
        (and 60 m) pixels; dtype and nodata of the 10 m file; a pixel is nodata in a band where
        that band's source (or its guide) is.

    Raises
    ------
    DataError, MismatchError, OutputExistsError
        Before any work: unnamed or repeated bands, a missing resolution, a 60 m file without
        ``model_x6``, a model that does not fit its bands, guides off the grid, or the output.
    """
    from .checkpoint import LoadedModel, load_model, model_files
    from .errors import DataError
    from .fileutil import check_output
    from .guide import sentinel2_bands, sentinel2_plan
    from .io import read, write

    bands = sentinel2_bands(files)
    sixty = [b for b in bands if b.resolution == 60]
    if sixty and model_x6 is None:
        raise DataError(
            f"{sixty[0].path}: the 60 m bands need a guided x6 model (--model-x6 MODEL): give one, or leave "
            "the 60 m file out to write the 10 and 20 m bands"
        )
    models = [m for m in (model_x2, model_x6) if m is not None]
    inputs = [
        *map(str, files),
        *(str(p) for m in models if not isinstance(m, LoadedModel) for p in model_files(m)),
    ]
    check_output(output, overwrite=overwrite, inputs=inputs)
    jobs = [(model_x2, sentinel2_plan(bands, 2), "--model-x2")]
    if sixty:
        jobs.append((model_x6, sentinel2_plan(bands, 6), "--model-x6"))
    loaded = []
    for model, plan, name in jobs:
        m = model if isinstance(model, LoadedModel) else load_model(model)
        _check_model(m, plan, name)
        loaded.append((m, plan))
    options = {"device": device, "precision": precision, "memory_budget": memory_budget, "progress": progress}
    fine = read(next(b.path for b in bands if b.resolution == 10))
    parts = [(fine, [b.name for b in bands if b.resolution == 10])]
    parts += [_sharpened(m, plan, options, adapt, tta=tta, consistency=consistency) for m, plan in loaded]
    write(_stack(parts, [b.name for b in bands]), output, overwrite=overwrite, cog=cog)
    return Path(output)


def _stack(parts: Sequence[tuple[Image, list[str]]], order: Sequence[str]) -> Image:
    """The bands of ``parts`` (images on one grid with their band names) in ``order``, on their common
    extent, each with its own validity, on the first part's grid (the 10 m bands, copied)."""
    shape = tuple(min(n) for n in zip(*(img.spatial_shape for img, _ in parts)))
    region = tuple(slice(0, n) for n in shape)
    where = {name: (img, i) for img, names in parts for i, name in enumerate(names)}
    data, masks = [], []
    for name in order:
        img, i = where[name]
        data.append(np.asarray(img.data[(i, *region)], np.float32))
        mask = img.mask if img.mask is None or img.mask.ndim == img.spatial_dims else img.mask[i]
        masks.append(np.ones(shape, bool) if mask is None else mask[region])
    fine = parts[0][0]
    meta = fine.meta.replace(band_names=tuple(order))
    mask = None if all(m.all() for m in masks) else np.stack(masks)
    return Image(np.stack(data), meta, mask)
