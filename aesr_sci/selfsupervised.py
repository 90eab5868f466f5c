"""Self-supervised super-resolution from the input alone: ``aesr-sci selfsr`` and ``upscale --adapt``.

It orchestrates from above: it makes training pairs from the input (a pair source of its own),
trains with the engine's loop (:func:`aesr_sci.training.fit`), then super-resolves the input with
:func:`aesr_sci.infer.upscale`.

- A thick-slice volume (:func:`~aesr_sci.selfsr.slice_geometry` finds its thick axis): the slice
  profile is estimated from the data, a 2D network of the family learns from in-plane patches
  degraded by it (:class:`~aesr_sci.selfsr.InPlanePairs`), and is applied across the thick axis in
  both orthogonal planes, the output on the field-of-view-preserving grid (SMORE, ECLARE).
- An image with a guide (``guide=``, a co-registered image on the output grid, e.g. Sentinel-2's
  10 m bands beside its 20 m bands): Wald's protocol on the input scene itself, as
  ``recipes/sentinel2_guided_x2.yaml`` trains on a product; the scale is the input's pixel size
  over the guide's, the input and the guide are both degraded by it (DSen2's Gaussian of sigma
  ``1 / s``, then block means), a guided network learns (degraded input, degraded guide) -> input,
  then maps (input, guide) onto the guide's grid.
- An isotropic image with a scale (zero-shot): the network learns to undo the input degraded one
  scale further (``kspace`` for NIfTI, ``gaussian`` for other images), then is applied to the input.
- :func:`adapt`: a copy of a trained model is fine-tuned on pairs made from the input by the
  model's own degradation before it predicts; the model's folder is never touched.

The time budget covers training and the final inference: inference is timed on a sample before
training and its estimate kept aside.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .checkpoint import MODEL_JSON, LoadedModel, load_model
from .checkpoint import save_model as write_model
from .data.degrade import Degradation
from .data.normalize import FOREGROUND_THRESHOLD, Normalizer
from .errors import DataError, MismatchError, OutputExistsError, ParameterError
from .infer import predict, refuse_thick_slice_options, select_device, tta_passes, upscale
from .selfsr import InPlanePairs, SliceGeometry, SliceProfile, estimate_profile, slice_geometry
from .spatial import Image
from .training import fit

__all__ = ["adapt", "selfsr"]

log = logging.getLogger(__name__)

_MIN_LQ = 4  # low-resolution voxels a training patch needs along each axis
_PATCH = {2: 48, 3: 32}  # largest high-resolution training patch per axis, 2D and 3D
_SAMPLES = 1000  # items per epoch of the pair sources
_SPARE_S = 2.0  # seconds kept for writing the output and the model
_TRAINING = {"batch_size": 16, "lr": 1e-3}  # thick-slice and zero-shot training
_ADAPT = {"batch_size": 16, "lr": 1e-4}  # fine-tuning a trained model without a guide
# guided training: recipes/sentinel2_guided_x2.yaml's model, patch (2D; 3D: _PATCH[3]), batch and
# learning rate (tests/test_selfsupervised.py keeps them in step with the recipe)
_GUIDED = {"name": "guided_residual", "features": 48, "blocks": 6, "patch": 96, "batch_size": 8, "lr": 5e-4}


def selfsr(
    image: Image | str | os.PathLike[str],
    *,
    scale: int | None = None,
    guide: Any = None,
    minutes: float = 10.0,
    max_steps: int | None = None,
    save_model: str | os.PathLike[str] | None = None,
    thickness: float | str | None = None,
    network: str | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    precision: str = "auto",
    device: str | None = None,
    tta: bool = False,
    consistency: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    seed: int = 0,
) -> Image:
    """Super-resolve ``image`` with a network trained on the image itself, within ``minutes``.

    Parameters
    ----------
    image
        A thick-slice NIfTI volume (its scale read from the voxel sizes), any image with ``scale``,
        or an image with ``guide``.
    scale
        The factor across the thick axis, or along every axis of an isotropic image (required then).
        With a guide it comes from the pixel sizes; a ``scale`` given must agree.
    guide
        A co-registered image on the output grid (a path, an :class:`~aesr_sci.spatial.Image` or an
        object :func:`aesr_sci.upscale` accepts), or a list of them finest first: trained by Wald's
        protocol on the input scene, the output lies on the (first) guide's grid. It is checked as
        ``upscale --guide`` checks it (:func:`aesr_sci.guide.check_guide`: CRS, pixel size, corner).
    minutes
        Wall-clock budget for training and the final inference (honoured within 10 %).
    max_steps
        At most this many training steps (default: as many as the budget allows).
    save_model
        A folder for the trained model (``model.json`` + ``model.safetensors``), which ``aesr-sci
        upscale`` applies to other scans of the same protocol as this function does.
    thickness
        The slice thickness in mm when it differs from the spacing (slices with gaps): the width
        of the slice profile, whose shape is fitted from the data. Default: the spacing across the
        thick axis. ``"auto"``: the width is fitted from the data too (gaps or overlaps the
        header does not record; the fit can be misled by in-plane axes blurrier than the grid).
    network
        A network of the family (:func:`aesr_sci.nets.build_model`); default ``residual``, or with a
        guide ``guided_residual`` as ``recipes/sentinel2_guided_x2.yaml`` builds it.
    batch_size, lr
        Training batch size and peak learning rate; default 16 and 1e-3, with a guide the recipe's
        8 and 5e-4.
    precision, device
        As for :func:`aesr_sci.infer.upscale`; training uses the same precision.
    tta, consistency
        The final inference as :func:`aesr_sci.infer.upscale` makes it (guided and isotropic inputs;
        a thick-slice input is refused them, its planes are combined from two orientations already).
        The budget keeps time for them.
    overwrite
        Replace a model in ``save_model``.
    progress
        Show a progress bar.
    seed
        Seed of the pairs and of the network's initialisation.

    Returns
    -------
    Image
        The super-resolved image in the input's units, with exact metadata: a thick-slice volume on
        the field-of-view-preserving grid (:func:`~aesr_sci.selfsr.output_meta`), an isotropic one
        zoomed as the degradation's grid convention defines, a guided one on the guide's grid with
        the input's band names, dtype and nodata.

    Raises
    ------
    DataError
        An isotropic image (or a 2D raster) without ``scale`` or ``guide``, two thick axes, or an
        input too small for a training patch.
    MismatchError
        A guide off the input's grid (another CRS, a pixel size that is not a whole fraction of the
        input's, a corner elsewhere), or a ``scale`` the guide contradicts.
    OutputExistsError
        A model in ``save_model`` without ``overwrite``.

    Examples
    --------
    >>> out = selfsr("t2_thick.nii.gz", minutes=10)  # doctest: +SKIP
    >>> out.meta.spacing  # doctest: +SKIP
    (0.9, 0.9, 0.917)
    >>> sharp = selfsr("scene_20m.tif", guide="scene_10m.tif", minutes=10)  # doctest: +SKIP
    """
    from .io import read

    started = time.perf_counter()
    source = "the input" if isinstance(image, Image) else str(image)
    if save_model is not None and (Path(save_model) / MODEL_JSON).exists() and not overwrite:
        raise OutputExistsError(f"{save_model} holds a model already: give --overwrite or another folder")
    img = image if isinstance(image, Image) else read(image)
    torch.manual_seed(seed)
    if (tta or consistency) and _is_thick_slice(img, guide, scale, source):  # before the profile's fit
        refuse_thick_slice_options(source, tta=tta, consistency=consistency)
    pairs, loaded, geometry, guides = _prepare(img, guide, scale, thickness, source, network, seed)
    dev = select_device(device)
    passes = tta_passes(loaded.scale, img.meta.spacing) if tta else 1
    reserve = passes * _inference_seconds(loaded, img, geometry, dev, precision) + _SPARE_S
    train_minutes = _training_minutes(minutes, time.perf_counter() - started, reserve, source)
    defaults = _GUIDED if guides else _TRAINING
    options = {"batch_size": batch_size or defaults["batch_size"], "lr": lr or defaults["lr"]}
    options |= {"precision": precision, "progress": progress, "seed": seed}
    if max_steps:
        options["steps"] = max_steps
    steps = _train(loaded, pairs, "training", {}, minutes=max(train_minutes, 1e-3), device=dev, **options)
    inference = {"precision": precision, "device": dev, "tta": tta, "consistency": consistency}
    out = upscale(img, loaded, guide=guides or None, **inference)
    if save_model is not None:
        write_model(save_model, loaded.network, loaded.config)
    return _with_provenance(out, loaded, steps, (time.perf_counter() - started) / 60, minutes)


def _is_thick_slice(img: Image, guide: Any, scale: int | None, source: str) -> bool:
    """Whether ``selfsr`` treats ``img`` as a thick-slice volume (no guide, one thick axis)."""
    return guide is None and slice_geometry(img.meta, scale=scale, name=source).axis is not None


def _with_provenance(
    out: Image, loaded: LoadedModel, steps: int, minutes_taken: float, minutes: float
) -> Image:
    """``out`` with selfsr's provenance: steps, minutes taken and (thick slices) the slice profile."""
    log.info("selfsr: %d steps, %.2f of %.2f min", steps, minutes_taken, minutes)
    thick = loaded.config.get("selfsr") or {}
    meta = out.meta.with_provenance(
        operation="selfsr", steps=steps, minutes=round(minutes_taken, 3), slice_profile=thick.get("profile")
    )
    return Image(out.data, meta, mask=out.mask)


def _prepare(
    img: Image,
    guide: Any,
    scale: int | None,
    thickness: float | str | None,
    source: str,
    network: str | None,
    seed: int,
) -> tuple[Dataset, LoadedModel, SliceGeometry | None, list[Image]]:
    """The pairs and the untrained model of the input's kind (guided, thick-slice or zero-shot), the
    thick-slice geometry (None with a guide) and the guide images (none without)."""
    if guide is not None:
        pairs, loaded, guides = _guided(img, guide, scale, source, network or _GUIDED["name"], seed)
        return pairs, loaded, None, guides
    measure = thickness == "auto"
    given = None if measure else thickness
    geometry = slice_geometry(img.meta, scale=scale, thickness=given, name=source)  # type: ignore[arg-type]
    if geometry.axis is None:
        pairs, loaded = _zero_shot(img, geometry, source, network or "residual", seed)
    else:
        pairs, loaded = _thick_slices(
            img, geometry, source, network or "residual", seed, measure_width=measure
        )
    return pairs, loaded, geometry, []


def _training_minutes(minutes: float, spent_s: float, reserve_s: float, source: str) -> float:
    """What the budget of ``minutes`` leaves to train after ``spent_s`` seconds of preparation and
    ``reserve_s`` kept for the final inference and writing; a warning when under a tenth of it."""
    train_minutes = minutes - (spent_s + reserve_s) / 60
    if train_minutes < 0.1 * minutes:
        log.warning(
            "Warning: %s: the budget of %g min leaves %.2f min to train (the final inference alone should "
            "take %.0f s): give more --minutes",
            source,
            minutes,
            max(train_minutes, 0.0),
            reserve_s - _SPARE_S,
        )
    return train_minutes


def adapt(
    model: LoadedModel | str | os.PathLike[str],
    image: Image | str | os.PathLike[str],
    *,
    minutes: float,
    guide: Any = None,
    batch_size: int | None = None,
    lr: float | None = None,
    precision: str = "auto",
    device: str | None = None,
    progress: bool = False,
    seed: int = 0,
) -> LoadedModel:
    """A copy of ``model`` fine-tuned for ``minutes`` on pairs made from ``image`` (degraded one scale
    further by the model's own degradation, or by its slice profile for a thick-slice model).

    A guided model is fine-tuned by Wald's protocol on the input scene: ``image`` and its ``guide``
    (as :func:`aesr_sci.infer.upscale` takes it) both degraded by the model's degradation, the
    network learning (degraded input, degraded guide) -> input, as ``selfsr --guide`` does from
    scratch. Batch size and learning rate default to 16 and 1e-4, for a guided model to
    ``selfsr --guide``'s batch (8) and half its peak learning rate.

    The model given, and its folder, are left as they are; the copy is returned for
    :func:`aesr_sci.infer.upscale`.

    Examples
    --------
    >>> adapted = adapt("runs/mri_x2", "clinical.nii.gz", minutes=3)  # doctest: +SKIP
    >>> out = upscale("clinical.nii.gz", adapted)  # doctest: +SKIP
    >>> tuned = adapt("runs/sentinel2_guided_x2", "S2_20m.tif", guide="S2_10m.tif", minutes=10)  # doctest: +SKIP
    """
    from .io import read

    source = "the input" if isinstance(image, Image) else str(image)
    img = image if isinstance(image, Image) else read(image)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    config = copy.deepcopy(loaded.config)
    own = LoadedModel(copy.deepcopy(loaded.network), config, loaded.path)
    guided = bool(loaded.guide_channels) or guide is not None
    if guided:
        pairs: Dataset = _adapt_guided_pairs(own, img, guide, source, seed)
    elif config.get("selfsr"):
        geometry = slice_geometry(img.meta, scale=int(config["selfsr"]["scale"]), name=source)
        profile = SliceProfile.from_dict(config["selfsr"]["profile"])
        pairs = _in_plane_pairs(img, geometry, profile, own.normalization, source, seed)
    else:
        pairs = _degraded_pairs(img, own.degradation, own.normalization, own.statistics, source, seed)
    defaults = {"batch_size": _GUIDED["batch_size"], "lr": _GUIDED["lr"] / 2} if guided else _ADAPT
    options = {"batch_size": batch_size or defaults["batch_size"], "lr": lr or defaults["lr"]}
    options |= {"precision": precision, "progress": progress, "seed": seed}
    _train(own, pairs, "adapted", {"input": source}, minutes=minutes, device=device, **options)
    return own


def _adapt_guided_pairs(loaded: LoadedModel, img: Image, guide: Any, source: str, seed: int) -> Dataset:
    """Wald's pairs of ``img`` and its guide for a guided model, checked as ``upscale --guide``
    checks them (band counts, CRS, pixel size, corner) and at the model's own scale."""
    from .guide import check_guide_bands
    from .infer import read_guides

    images, names = read_guides(guide)
    first = names[0] if names else "guide"
    check_guide_bands(
        loaded.guide_channels,
        sum(g.channels for g in images) or None,
        guide_name=first,
        names=loaded.guide_band_names,
    )
    target, factors = _guide_grid(img, images, names, None, source)
    if tuple(factors) != tuple(loaded.scale):
        raise MismatchError(
            f"{first}: the guide's pixels are {'x'.join(map(str, factors))} times finer than {source}'s, "
            f"the model's scale is {'x'.join(map(str, loaded.scale))}: give the guide the model was trained for"
        )
    return _wald_pairs(
        img,
        images,
        target,
        loaded.degradation,
        loaded.normalization,
        loaded.statistics.get("policy"),
        source,
        seed,
    )


def _wald_pairs(
    img: Image,
    images: list[Image],
    target: Image,
    degradation: Degradation,
    normalizer: Any,
    policy: str | None,
    source: str,
    seed: int,
) -> Any:
    """Wald's pairs of one scene: (``img`` and its guide ``images`` both degraded by ``degradation``)
    -> ``img``, patches as large as ``target`` (the part of ``img`` the guides cover) allows."""
    from .data.dataset import PairDataset

    dims = img.spatial_dims
    scale = degradation.scale_for(dims)
    patch = _patch(target.spatial_shape, scale, _GUIDED["patch"] if dims == 2 else _PATCH[3], source)
    return PairDataset(
        [img],
        guides=[images],
        spatial_dims=dims,
        patch_size=patch,
        degradation=degradation,
        normalizer=normalizer,
        samples_per_epoch=_SAMPLES,
        policy=policy,
        seed=seed,
    )


def _train(loaded: LoadedModel, pairs: Dataset, key: str, info: dict[str, Any], **options: Any) -> int:
    """Train ``loaded``'s network on ``pairs`` (:func:`aesr_sci.training.fit` with ``options``), keep
    the trained network and record the steps and minutes under ``key`` in its config; the steps."""
    result = fit(loaded.network, pairs, **options)
    loaded.network = result.network
    loaded.config[key] = {**info, "steps": result.steps, "minutes": round(result.seconds / 60, 3)}
    return result.steps


# ----------------------------------------------------------------------------------- pairs
def _patch(shape: tuple[int, ...], scale: tuple[int, ...], cap: int, source: str) -> tuple[int, ...]:
    """The largest training patch up to ``cap`` per axis, a multiple of the scale; an input too
    small for ``_MIN_LQ`` low-resolution voxels per axis is refused."""
    if any(n < _MIN_LQ * s for n, s in zip(shape, scale)):
        need = " x ".join(str(_MIN_LQ * s) for s in scale)
        raise DataError(
            f"{source}: {' x '.join(map(str, shape))} voxels is too small for scale {'x'.join(map(str, scale))}: "
            f"a training patch needs at least {need}; give a larger image or a smaller --scale"
        )
    return tuple(s * max(_MIN_LQ, min(cap, n) // s) for n, s in zip(shape, scale))


def _in_plane_pairs(
    img: Image, geometry: SliceGeometry, profile: SliceProfile, normalizer: Any, source: str, seed: int
) -> InPlanePairs:
    """In-plane pairs of a thick-slice volume, its patch as large as the in-plane axes allow."""
    s = geometry.scale
    n = min(img.spatial_shape[a] for a in geometry.in_plane)
    p, q = _patch((n, n), (s, 1), _PATCH[2], source)
    return InPlanePairs(
        img,
        geometry,
        profile,
        patch_size=(p, q),
        samples_per_epoch=_SAMPLES,
        normalizer=normalizer,
        seed=seed,
    )


def _degraded_pairs(
    img: Image, degradation: Degradation, normalizer: Any, statistics: dict[str, Any], source: str, seed: int
) -> Dataset:
    """Pairs of the input and its degradation one scale further (zero-shot and ``--adapt``)."""
    from .data.dataset import PairDataset

    dims = img.spatial_dims
    scale = degradation.scale_for(dims)
    patch = _patch(tuple(img.spatial_shape), scale, _PATCH[dims], source)
    return PairDataset(
        [img],
        spatial_dims=dims,
        patch_size=patch,
        degradation=degradation,
        normalizer=normalizer,
        samples_per_epoch=_SAMPLES,
        policy=statistics.get("policy"),
        seed=seed,
    )


# --------------------------------------------------------------------------------- models
def _config(network: torch.nn.Module, degradation: Degradation, policy: str, **extra: Any) -> dict[str, Any]:
    """The ``model.json`` of a self-trained network (what :func:`aesr_sci.infer.upscale` reads)."""
    from .nets import model_config

    return {
        "network": model_config(network),
        "degradation": {**degradation.to_dict(), "convention": degradation.convention},
        "normalization": Normalizer().to_dict(),
        "statistics": {"policy": policy, "threshold": FOREGROUND_THRESHOLD},
        "inference_patch": None,
        "recipe": "selfsr",
        **extra,
    }


def _thick_slices(
    img: Image, geometry: SliceGeometry, source: str, name: str, seed: int, *, measure_width: bool = False
) -> tuple[Dataset, LoadedModel]:
    """In-plane pairs and an untrained 2D network ``(scale, 1)`` for a thick-slice volume: the slice
    profile as wide as the slice thickness (or, ``measure_width``, as wide as the data says), its
    shape fitted from the data."""
    from .nets import build_model

    profile = estimate_profile(img, geometry, fwhm=None if measure_width else geometry.fwhm, seed=seed)
    pairs = _in_plane_pairs(img, geometry, profile, None, source, seed)
    deg = profile.degradation(spatial_dims=2, axis=0)
    net = build_model(
        name, spatial_dims=2, in_channels=img.channels, scale=[geometry.scale, 1], convention=deg.convention
    )
    selfsr_info = {
        "scale": geometry.scale,
        "profile": profile.to_dict(),
        "spacing": list(geometry.spacing),
        "thick_axis": geometry.axis,
    }
    config = _config(net, deg, "foreground", spatial_dims=2, selfsr=selfsr_info)
    return pairs, LoadedModel(net, config, Path("selfsr"))


def _zero_shot(
    img: Image, geometry: SliceGeometry, source: str, name: str, seed: int
) -> tuple[Dataset, LoadedModel]:
    """Pairs of the input degraded one scale further and an untrained network of the input's dimensions."""
    from .nets import build_model

    dims = img.spatial_dims
    deg = Degradation("kspace" if img.meta.format == "nifti" else "gaussian", (geometry.scale,) * dims)
    pairs = _degraded_pairs(img, deg, None, {}, source, seed)
    net = build_model(
        name, spatial_dims=dims, in_channels=img.channels, scale=geometry.scale, convention=deg.convention
    )
    config = _config(net, deg, str(pairs.policy), spatial_dims=dims)
    return pairs, LoadedModel(net, config, Path("selfsr"))


def _guide_grid(
    img: Image, images: list[Image], names: list[str], scale: int | None, source: str
) -> tuple[Image, tuple[int, ...]]:
    """The input cropped to the part the guide ``images`` (finest first) cover, and the scale (the
    input's pixel size over the first guide's), checked as ``upscale --guide`` checks them."""
    from .guide import crop_to_guide, guide_scale

    first = images[0]
    shapes = {"target_shape": img.spatial_shape, "guide_shape": first.spatial_shape}
    factors = guide_scale(img.meta, first.meta, **shapes, guide_name=names[0])
    if scale is not None and factors != (scale,) * len(factors):
        raise MismatchError(
            f"{names[0]}: the guide's pixels are {'x'.join(map(str, factors))} times finer than {source}'s, "
            f"not {scale}: leave out --scale with a guide (the guide sets it)"
        )
    target, _, _ = crop_to_guide(img, images, factors, guide_names=names)
    return target, factors


def _guided(
    img: Image, guide: Any, scale: int | None, source: str, name: str, seed: int
) -> tuple[Dataset, LoadedModel, list[Image]]:
    """Wald's protocol on the input scene: pairs of (the input and its guide, both degraded by the
    scale) -> the input, an untrained guided network, and the guide images (finest first)."""
    from .guide import dsen2_sigma
    from .infer import read_guides
    from .nets import build_model
    from .nets.registry import is_guided

    if not is_guided(name):
        raise ParameterError(
            f"network {name!r} takes no guide: use guided_residual or guided_dual with a guide"
        )
    images, names = read_guides(guide)
    target, factors = _guide_grid(img, images, names, scale, source)
    dims = img.spatial_dims
    deg = Degradation("gaussian", factors, {"sigma": dsen2_sigma(factors)})
    pairs = _wald_pairs(img, images, target, deg, None, None, source, seed)
    options = {k: _GUIDED[k] for k in ("features", "blocks")} if name == _GUIDED["name"] else {}
    net = build_model(
        name,
        spatial_dims=dims,
        in_channels=img.channels,
        scale=list(factors),
        convention=deg.convention,
        guide_channels=pairs.guide_channels,
        **options,
    )
    first_guides = pairs.sources[0].guides
    guided = {
        "guide_channels": pairs.guide_channels,
        "guide_band_names": [n for g in first_guides for n in (g.meta.band_names or ("",) * g.channels)],
        "guide_statistics": {"policy": pairs.policy, "threshold": FOREGROUND_THRESHOLD},
        "guide_factors": [list(g.factor) for g in first_guides],
    }
    config = _config(
        net, deg, pairs.policy, spatial_dims=dims, band_names=list(img.meta.band_names or []), **guided
    )
    return pairs, LoadedModel(net, config, Path("selfsr")), images


def _inference_seconds(
    loaded: LoadedModel, img: Image, geometry: SliceGeometry | None, device: torch.device, precision: str
) -> float:
    """The final inference's time, extrapolated from one timed pass of the (untrained) network over a
    sample (with a zero guide of the matching size for a guided network).

    A first pass on one plane goes untimed: the first call builds the kernels (bfloat16 ones take
    seconds), and timing it overstated the final inference, leaving little time to train.
    """
    net = loaded.network.to(device).eval()
    shape = img.spatial_shape
    guide = None
    if (
        geometry is not None and geometry.axis is not None
    ):  # planes (thick axis, in-plane axis), both orientations
        a, b = geometry.in_plane
        n = min(16, shape[b])
        sample = torch.zeros(n, loaded.in_channels, shape[geometry.axis], shape[a])
        factor = (shape[a] + shape[b]) / n * max(1, img.channels // loaded.in_channels)
    else:
        crop = tuple(min(n, 64 if len(shape) == 2 else 24) for n in shape)
        sample = torch.zeros(1, img.channels, *crop)
        factor = math.prod(shape) / math.prod(crop)
        if loaded.guide_channels:
            guide = torch.zeros(1, loaded.guide_channels, *(n * s for n, s in zip(crop, loaded.scale)))
    first = None if guide is None else guide[:1]
    predict(net, sample[:1], device=device, precision=precision, guide=first)  # warm-up: kernels made
    t0 = time.perf_counter()
    predict(net, sample, device=device, precision=precision, guide=guide)
    seconds = (time.perf_counter() - t0) * factor
    log.info("selfsr: the final inference should take about %.1f s", seconds)
    return float(np.clip(seconds, 0.0, None))
