"""Sliding-window inference: super-resolve an image and give it back with its metadata intact.

The path for an image in memory is MONAI's :func:`monai.inferers.sliding_window_inference` (it
handles predictors whose output is larger than their input) with smoothstep window weights
(:func:`blend_weights`: flat inside, a smooth ramp near the edges; not MONAI's Gaussian). A GeoTIFF too
large to hold in memory is streamed instead: it is read in blocks through rasterio windows with a
halo, each block goes through the same sliding window, and the block's centre is written into the
output file, so peak memory depends on the block size, never on the raster's size.

Around the network, :func:`upscale`:

1. checks that the model fits the input (band count, dimensionality, grid);
2. normalises intensities the way the model was trained (statistics of this input);
3. fills nodata pixels with their nearest valid neighbour, so nodata values never reach valid
   output pixels through the network's receptive field or the blending;
4. optionally averages over flips and in-plane rotations (``tta``) and projects the result so that
   degrading it reproduces the input (``consistency``);
5. inverts the normalisation and attaches the zoomed metadata: the affine or transform follows the
   model's grid convention, and pixels whose support was nodata stay nodata.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .checkpoint import LoadedModel, load_model
from .errors import FileFormatError, FileWriteError, MismatchError
from .nets.blocks import SRNetwork
from .nets.receptive import Reach, reach
from .spatial import Image, per_axis

__all__ = [
    "PRECISIONS",
    "autocast",
    "channels_last",
    "cpu_has_bfloat16",
    "default_memory_budget",
    "fill_nodata",
    "network_reach",
    "plan_windows",
    "predict",
    "project_consistent",
    "raster_statistics",
    "read_guides",
    "resolve_precision",
    "select_device",
    "upscale",
    "upscale_files",
]

log = logging.getLogger(__name__)

_STREAM_VALUES = 4 * 1024 * 1024  # rasters with more pixels x bands than this are streamed


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` picks CUDA when available, else the CPU; otherwise check the request is usable."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MismatchError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return dev


def _as_tuple(value: int | Sequence[int] | None, dims: int) -> tuple[int, ...] | None:
    return None if value is None else per_axis(value, dims, name="patch size")


# ------------------------------------------------------------------------------- precision
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device | str) -> tuple[torch.dtype | None, bool]:
    """The autocast dtype (``None``: plain float32) and whether to use channels-last memory.

    ``auto`` picks bfloat16 with channels-last on CUDA and on CPUs with native bfloat16
    (:func:`cpu_has_bfloat16`), float32 elsewhere. Global parts (the Fourier skip, squeeze-excitation
    means, the consistency projection) stay in float32 whatever the choice.

    Raises
    ------
    MismatchError
        For a value outside :data:`PRECISIONS`.
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise MismatchError(
            f"precision {precision!r} is not one of {', '.join(PRECISIONS)}: pick one of those"
        )
    if precision == "auto":
        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_bfloat16())
        precision = "bfloat16" if native else "float32"
    if precision == "float32":
        return None, False
    return (torch.bfloat16 if precision == "bfloat16" else torch.float16), True


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """Autocast to ``dtype`` on ``device``, or nothing at all for ``None`` (float32 stays untouched)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def channels_last(x: Any, enabled: bool, spatial_dims: int) -> Any:
    """``x`` (a tensor or a module) in channels-last memory order when ``enabled``, else contiguous.

    Values are unchanged; only the order of the channels in memory moves, which lets oneDNN and
    cuDNN pick their fastest reduced-precision convolutions.
    """
    if not enabled:
        fmt = torch.contiguous_format
    else:
        fmt = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
    return x.to(memory_format=fmt)


# ---------------------------------------------------------------------------------- tiling
def default_memory_budget(device: torch.device | str) -> int:
    """Half the memory available now: free GPU memory on CUDA, ``MemAvailable`` on the CPU (bytes)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0] * 0.5)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    return 4 * 1024**3  # unknown: assume a modest machine


_REACH_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, Reach] = weakref.WeakKeyDictionary()


def network_reach(network: torch.nn.Module, lq: torch.Tensor) -> Reach:
    """:func:`~aesr_sci.nets.receptive.reach` of ``network``, measured once and cached."""
    if network not in _REACH_CACHE:
        param = next(network.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.device(device):
            _REACH_CACHE[network] = reach(network, spatial_dims=lq.dim() - 2, in_channels=lq.shape[1])
    return _REACH_CACHE[network]


def plan_windows(
    spatial: Sequence[int], r: Reach, *, patch_size: Sequence[int] | None, budget: float, itemsize: int = 4
) -> list[tuple[tuple[int, int], ...]] | None:
    """Core regions ``((start, stop), ...)`` of the windows, or ``None`` for one whole-image pass.

    With ``patch_size`` the cores are that size (rounded up to ``r.multiple``). Otherwise the whole
    image runs at once if it fits ``budget`` bytes; else, of all grids of cores (up to 32 a side),
    the one with the least total work (window voxels, halos included) whose largest window fits
    (when none fits, whose largest window is within 1.5 times the smallest possible).
    """
    n = [int(v) for v in spatial]
    # measured: 16-bit autocast holds more than float32 in 3D (weight casts, channels-last copies)
    per_voxel = r.bytes_per_voxel * (1.25 if itemsize == 2 else 1.0)
    if patch_size is not None:
        core = [min(_align(p, r.multiple), m) for p, m in zip(patch_size, n)]
    elif math.prod(n) * per_voxel <= budget:
        return None
    else:
        options = [_axis_options(m, r) for m in n]  # (core, summed window length, largest window)
        grids = [
            (math.prod(o[2] for o in g), math.prod(o[1] for o in g), g) for g in itertools.product(*options)
        ]
        # the least work among grids that fit; if none does, among those within 1.5x of the smallest
        smallest = min(largest for largest, _, _ in grids)
        limit = budget / per_voxel if smallest <= budget / per_voxel else 1.5 * smallest
        core = [o[0] for o in min((g for g in grids if g[0] <= limit), key=lambda g: g[1])[2]]
    if all(c >= m for c, m in zip(core, n)):
        return None
    starts = [range(0, m, c) for m, c in zip(n, core)]
    return [
        tuple((a, min(a + c, m)) for a, c, m in zip(corner, core, n)) for corner in itertools.product(*starts)
    ]


def _align(v: float, multiple: int) -> int:
    return max(multiple, -(-math.ceil(v) // multiple) * multiple)


def _axis_options(n: int, r: Reach, most: int = 32) -> list[tuple[int, int, int]]:
    """Ways to cut one axis of ``n`` voxels: (core, total window length, largest window length)."""
    options = {}
    for count in range(1, most + 1):
        core = min(_align(n / count, r.multiple), n)
        lengths = [min(n, a + core + r.halo) - max(0, a - r.halo) for a in range(0, n, core)]
        options[core] = (core, sum(lengths), max(lengths))
    return list(options.values())


class _Stop(Exception):
    """Ends a forward pass once the global pool being measured has seen its input."""


@contextlib.contextmanager
def _global_means(means: dict[torch.nn.Module, torch.Tensor]) -> Iterator[None]:
    """Make each pool in ``means`` return its whole-image mean instead of the window's."""

    def hook(module: torch.nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor:
        return means[module].to(out.device, out.dtype).view(out.shape)

    handles = [pool.register_forward_hook(hook) for pool in means]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _as_inputs(inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``(lq,)`` or ``(lq, guide)``: a network's inputs, from one tensor or a sequence of them."""
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)


def _window(
    inputs: torch.Tensor | Sequence[torch.Tensor], core: Sequence[tuple[int, int]], halo: int
) -> tuple[tuple[torch.Tensor, ...], list[int]]:
    """The windows around ``core`` (clipped to the image) of ``lq`` and any guide, and lq's start on each axis.

    ``inputs`` is ``(lq,)`` or ``(lq, guide)``; a guide's window is lq's times the guide's factor
    (its size over lq's on each axis), so both cover the same ground.
    """
    inputs = _as_inputs(inputs)
    lq = inputs[0]
    starts = [max(0, a - halo) for a, _ in core]
    stops = [min(n, b + halo) for (_, b), n in zip(core, lq.shape[2:])]
    windows = []
    for x in inputs:
        f = [m // n for m, n in zip(x.shape[2:], lq.shape[2:])]
        windows.append(
            x[(slice(None), slice(None), *(slice(a * k, b * k) for a, b, k in zip(starts, stops, f)))]
        )
    return tuple(windows), starts


def _measure_pools(
    run: Any, lq: Sequence[torch.Tensor], cores: Sequence[Sequence[tuple[int, int]]], r: Reach
) -> dict[torch.nn.Module, torch.Tensor]:
    """Whole-image means of the global pools, each from the window cores with the earlier ones fixed.

    A pool's input is local once every earlier pool is fixed, so its mean over the whole image is
    the sum over the windows' cores: one pass per pool, stopped at that pool.
    """
    means: dict[torch.nn.Module, torch.Tensor] = {}
    for pool in r.global_pools:
        with _global_means(means):
            means[pool] = _pool_mean(run, lq, cores, r.halo, pool)
    return means


def _pool_mean(
    run: Any,
    lq: Sequence[torch.Tensor],
    cores: Sequence[Sequence[tuple[int, int]]],
    halo: int,
    pool: torch.nn.Module,
) -> torch.Tensor:
    """The mean of ``pool``'s input over the whole image, summed over the windows' cores."""
    total: list[torch.Tensor] = []
    where: dict[str, Any] = {}

    def measure(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x, window = args[0], where["window"]
        ratio = [w // f for w, f in zip(window.shape[2:], x.shape[2:])]
        box = tuple(
            slice((a - s) // q, (b - s) // q) for (a, b), s, q in zip(where["core"], where["starts"], ratio)
        )
        total.append(x[(slice(None), slice(None), *box)].double().sum(tuple(range(2, x.dim()))))
        raise _Stop

    handle = pool.register_forward_pre_hook(measure)
    try:
        for core in cores:
            windows, where["starts"] = _window(lq, core, halo)
            where["window"], where["core"] = windows[0], core
            with contextlib.suppress(_Stop):
                run(*windows)
    finally:
        handle.remove()
    mean = torch.stack(total).sum(0) / math.prod(lq[0].shape[2:])
    return mean.float()[(..., *([None] * (lq[0].dim() - 2)))]


@torch.no_grad()
def predict(
    network: torch.nn.Module,
    lq: torch.Tensor,
    *,
    patch_size: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    precision: str = "float32",
    memory_budget: float | None = None,
    progress: bool = False,
    guide: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``network`` over ``lq`` ``(N, C, *S)``, in windows when it does not fit, exactly.

    Each window is a core plus a halo that covers the network's receptive field
    (:func:`~aesr_sci.nets.receptive.reach`); only the core's output is kept, so the stitched result
    equals one whole-image pass to float32 rounding. The parts that see the whole image are computed
    over the whole image: a Fourier skip is added once to the tiled :meth:`SRNetwork.local` output,
    and squeeze-excitation means are measured over all windows first (one pass per gate).

    Parameters
    ----------
    patch_size
        Window core in low-resolution voxels; ``None`` sizes the windows to ``memory_budget`` (one
        pass when the image fits), a size covering the image runs it whole.
    precision
        See :func:`resolve_precision` (``upscale`` defaults to ``"auto"``; this low-level function to
        ``"float32"``, which is bit-identical to calling the network).
    memory_budget
        Bytes the windows may use; default :func:`default_memory_budget`.
    guide
        For a guided network, its guide ``(N, G, *(S * scale))``: each window of ``lq`` runs with
        the matching window of the guide (the receptive field covers both), so tiling stays exact.

    Returns
    -------
    torch.Tensor
        Float32, on the CPU.
    """
    device = torch.device(device)
    dtype, layout = resolve_precision(precision, device)
    dims = lq.dim() - 2
    channels_last(network, layout, dims)

    def run(*x: torch.Tensor, module: Any = network) -> torch.Tensor:
        with autocast(device, dtype):
            return module(*(channels_last(t.to(device, non_blocking=True), layout, dims) for t in x)).float()

    inputs = (lq,) if guide is None else (lq, guide)
    r = network_reach(network, lq)
    budget = memory_budget if memory_budget is not None else default_memory_budget(device)
    cores = plan_windows(lq.shape[2:], r, patch_size=patch_size, budget=budget, itemsize=2 if dtype else 4)
    if cores is None:
        log.debug("one whole-image pass")
        return run(*inputs).cpu().contiguous()
    log.debug(
        "%d windows (halo %d)%s", len(cores), r.halo, " with their guide windows" if guide is not None else ""
    )
    gen = getattr(network, "generator", network)
    # a Fourier skip is global: tile the local part (when the network has one) and add it once
    global_skip = getattr(gen, "skip_mode", None) == "fourier" and type(gen).local is not SRNetwork.local
    local = gen.local if global_skip else network
    means = _measure_pools(lambda *x: run(*x, module=local), inputs, cores, r) if r.global_pools else {}
    with _global_means(means):
        out = _stitch(lambda *x: run(*x, module=local), inputs, cores, r.halo, progress)
    if global_skip:
        out += gen.skip(lq.to(device)).float().cpu()
    return out


def _stitch(
    run: Any,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    cores: Sequence[Sequence[tuple[int, int]]],
    halo: int,
    progress: bool,
) -> torch.Tensor:
    """Run every window (of lq and any guide) and copy the output of its core into the result."""
    from tqdm.auto import tqdm

    lq = _as_inputs(inputs)[0]
    out: torch.Tensor | None = None
    scale: list[int] = []
    for core in tqdm(cores, desc="windows", disable=not progress, unit="window"):
        windows, starts = _window(inputs, core, halo)
        window = windows[0]
        y = run(*windows).cpu()
        if out is None:
            scale = [o // i for o, i in zip(y.shape[2:], window.shape[2:])]
            out = torch.empty((*y.shape[:2], *(n * s for n, s in zip(lq.shape[2:], scale))))
        src = tuple(slice((a - w) * s, (b - w) * s) for (a, b), w, s in zip(core, starts, scale))
        dst = tuple(slice(a * s, b * s) for (a, b), s in zip(core, scale))
        out[(slice(None), slice(None), *dst)] = y[(slice(None), slice(None), *src)]
    assert out is not None
    return out


def fill_nodata(data: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Replace invalid pixels (``mask == False``) by the value of their nearest valid pixel
    (``mask`` ``(*spatial)`` for every band, or ``(C, *spatial)`` per band)."""
    if mask is None or mask.all():
        return data
    if mask.ndim == data.ndim:
        return np.concatenate([fill_nodata(data[b : b + 1], mask[b]) for b in range(data.shape[0])])
    if not mask.any():
        return np.zeros_like(data)
    from scipy import ndimage

    idx = ndimage.distance_transform_edt(~mask, return_distances=False, return_indices=True)
    return data[(slice(None), *idx)]


def _hr_mask(mask: np.ndarray | None, scale: Sequence[int]) -> np.ndarray | None:
    """An output pixel is valid when the input pixel it lies in is valid."""
    if mask is None:
        return None
    out = mask
    first = mask.ndim - len(scale)  # 1 for a per-band mask (C, *spatial)
    for ax, s in enumerate(scale):
        out = np.repeat(out, int(s), axis=first + ax)
    return out


def project_consistent(
    hr: torch.Tensor, lq: torch.Tensor, degradation: Any, *, iterations: int = 1000, tol: float = 1e-12
) -> torch.Tensor:
    """The closest ``x`` to ``hr`` (least squares) with ``D(x) == lq`` for the linear degradation D.

    Solves ``x = hr + D^T z`` with ``D D^T z = lq - D(hr)`` by conjugate gradients in float64; the
    adjoint comes from autograd, so it works for every degradation model. For k-space truncation and
    block means ``D D^T`` is a multiple of the identity and one iteration is exact.
    """
    hr64 = hr.to(torch.float64)
    y = lq.to(torch.float64)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return degradation.apply(x)

    _, vjp = torch.func.vjp(forward, hr64)

    def adjoint(z: torch.Tensor) -> torch.Tensor:
        return vjp(z)[0]

    def normal(z: torch.Tensor) -> torch.Tensor:
        return forward(adjoint(z))

    r = y - forward(hr64)
    z = torch.zeros_like(r)
    p = r.clone()
    rs = torch.sum(r * r)
    ref = torch.sum(y * y).clamp_min(1e-30)
    for _ in range(iterations):
        if rs / ref < tol**2:
            break
        ap = normal(p)
        alpha = rs / torch.sum(p * ap).clamp_min(1e-300)
        z = z + alpha * p
        r = r - alpha * ap
        rs_new = torch.sum(r * r)
        p = r + (rs_new / rs) * p
        rs = rs_new
    return (hr64 + adjoint(z)).to(hr.dtype)


def _tta_transforms(
    spatial_dims: int, scale: Sequence[int], spacing: Sequence[float]
) -> list[tuple[tuple[int, ...], int, tuple[int, int] | None]]:
    """(flip axes, rot90 count, rotation plane) triples; rotations only mix axes of equal scale and spacing.

    Flips never mix axes, so every axis may be flipped; a 90-degree rotation is used only in a plane
    whose two axes share the scale and the voxel size (never across an anisotropic axis).
    """
    groups: dict[tuple[int, float], list[int]] = {}
    for a in range(spatial_dims):
        groups.setdefault((int(scale[a]), round(float(spacing[a]), 3)), []).append(a)
    plane_axes = max(groups.values(), key=len)
    plane = (plane_axes[0], plane_axes[1]) if len(plane_axes) >= 2 else None
    rotations = [0] if plane is None else ([0, 1, 2, 3] if spatial_dims == 2 else [0, 1])
    flip_sets: list[tuple[int, ...]] = [(), *((a,) for a in range(spatial_dims))]
    return [(flips, k, plane) for flips, k in itertools.product(flip_sets, rotations)]


def tta_passes(scale: Sequence[int], spacing: Sequence[float]) -> int:
    """How many network passes ``tta`` makes for a network of this ``scale`` on this voxel ``spacing``."""
    return len(_tta_transforms(len(scale), scale, spacing))


def refuse_thick_slice_options(source: str, *, tta: bool, consistency: bool) -> None:
    """Raise :class:`MismatchError` for ``tta`` or ``consistency`` with thick-slice super-resolution
    (``aesr-sci selfsr`` and its models): its planes are combined from two orientations already, and
    neither option moved a tuning volume by more than 0.05 dB (docs/benchmarks.md)."""
    if tta or consistency:
        raise MismatchError(
            f"{source}: thick-slice super-resolution runs in both orientations already: leave out "
            "--tta and --consistency"
        )


def _apply_tta(
    run: Any, x: torch.Tensor | Sequence[torch.Tensor], scale: Sequence[int], spacing: Sequence[float]
) -> torch.Tensor:
    """The mean of ``run`` over flips and rotations of its inputs (lq and any guide, moved alike)."""
    inputs = _as_inputs(x)
    dims = inputs[0].ndim - 2
    outputs = []
    for flips, k, plane in _tta_transforms(dims, scale, spacing):
        ts = inputs
        if flips:
            ts = tuple(torch.flip(t, [2 + a for a in flips]) for t in ts)
        if k and plane is not None:
            ts = tuple(torch.rot90(t, k, [2 + plane[0], 2 + plane[1]]) for t in ts)
        y = run(*ts)
        if k and plane is not None:
            y = torch.rot90(y, -k, [2 + plane[0], 2 + plane[1]])
        if flips:
            y = torch.flip(y, [2 + a for a in flips])
        outputs.append(y)
    return torch.stack(outputs).mean(0)


def check_fit(model: LoadedModel, image: Image, source: str, *, thick_slices: bool = True) -> None:
    """Raise :class:`MismatchError` if ``model`` cannot upscale ``image``: dimensions, bands, and
    (``thick_slices``, for inputs rather than high-resolution references) the thick-slice axis."""
    if model.config.get("selfsr"):
        _thick_geometry(model, image, source)
        return
    if image.spatial_dims != model.spatial_dims:
        kind = {2: "2D (rasters or slices)", 3: "3D (volumes)"}
        raise MismatchError(
            f"{source}: the model works on {kind[model.spatial_dims]} images but this is {kind[image.spatial_dims]}: "
            f"use a {model.spatial_dims}D model"
        )
    if image.channels != model.in_channels and model.in_channels != 1:
        raise MismatchError(
            f"{source}: the model expects {model.in_channels} band(s) but the input has {image.channels}: "
            f"use a model trained on {image.channels}-band data"
            + (f" (the model's bands: {', '.join(model.band_names)})" if model.band_names else "")
        )
    scale = model.scale
    if thick_slices and len(set(scale)) > 1:  # anisotropic model: the input's thick axis must be the model's
        spacing = image.meta.spacing
        thick = int(np.argmax(scale))
        ratio = spacing[thick] / min(spacing[a] for a in range(len(scale)) if a != thick)
        if ratio < 1.5:
            raise MismatchError(
                f"{source}: the model upscales axis {thick} by {scale[thick]} (thick slices along it) but the "
                f"input's voxels are {spacing[thick]:.3g} along axis {thick} against "
                f"{min(spacing):.3g} elsewhere: give a thick-slice input, or reorient it so its slice axis is {thick}"
            )


def _thick_geometry(model: LoadedModel, image: Image, source: str) -> Any:
    """The thick axis of ``image`` for a thick-slice model of ``aesr-sci selfsr`` (a 2D network
    applied across the thick axis), or :class:`MismatchError`."""
    from .selfsr import slice_geometry

    scale = int(model.config["selfsr"]["scale"])
    if image.spatial_dims != 3 or (image.channels != model.in_channels and model.in_channels != 1):
        raise MismatchError(
            f"{source}: the model super-resolves thick-slice volumes of {model.in_channels} channel(s) but "
            f"this is a {image.spatial_dims}D image of {image.channels}: give a thick-slice NIfTI volume"
        )
    geometry = slice_geometry(image.meta, scale=scale, name=source)
    if geometry.axis is None:
        raise MismatchError(
            f"{source}: the model super-resolves thick slices (x{scale} across the thick axis) but the "
            f"input's voxels are {' x '.join(f'{v:.3g}' for v in image.meta.spacing)} mm, with no thick "
            "axis: give a thick-slice scan of the model's protocol"
        )
    return geometry


def _upscale_thick(
    img: Image,
    loaded: LoadedModel,
    source: str,
    *,
    device: torch.device,
    precision: str,
    memory_budget: float | None,
    tta: bool = False,
    consistency: bool = False,
) -> Image:
    """``upscale`` with a thick-slice model of ``aesr-sci selfsr``: its 2D network is applied across
    the thick axis in both orthogonal planes (:func:`~aesr_sci.selfsr.combine_orientations`) and the
    result lies on the field-of-view-preserving grid (:func:`~aesr_sci.selfsr.output_meta`). Such a
    model takes no ``tta`` nor ``consistency``: they are refused."""
    from .data.normalize import Normalizer, fit_statistics
    from .selfsr import combine_orientations, output_meta

    refuse_thick_slice_options(str(loaded.path), tta=tta, consistency=consistency)
    geometry = _thick_geometry(loaded, img, source)
    network = loaded.network.to(device).eval()
    normalizer = Normalizer.from_dict(loaded.normalization)
    data = np.asarray(img.data, dtype=np.float32)
    stats = fit_statistics(data, img.common_mask, normalizer=normalizer, **loaded.statistics)
    x = fill_nodata(np.asarray(normalizer.apply(data, stats), dtype=np.float32), img.common_mask)

    def planes_up(planes: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(planes)
        return predict(network, t, device=device, precision=precision, memory_budget=memory_budget).numpy()

    bands = [x] if loaded.in_channels == x.shape[0] else [x[c : c + 1] for c in range(x.shape[0])]
    y = np.concatenate(
        [combine_orientations(b, planes_up, axis=geometry.axis, scale=geometry.scale) for b in bands]
    )
    out = np.asarray(normalizer.invert(y, stats), dtype=np.float32)
    meta = output_meta(img.meta, geometry).with_provenance(
        **_provenance(loaded, tta=False, consistency=False)
    )
    return Image(out, meta, mask=_hr_mask(img.mask, geometry.zoom))


def check_spacing(
    model: LoadedModel, spacing: Sequence[float], source: str, *, factor: float = 1.5
) -> str | None:
    """A one-line warning when the input's voxel size, or its anisotropy, is more than ``factor``
    away from what the model expects (its training data's spacing times its scale; for a guided
    model, trained by Wald's protocol on the targets degraded once more, the training files' own
    spacing); else None."""
    trained = model.config.get("training_spacing")
    if not trained or len(trained) != len(spacing) or len(spacing) != len(model.scale):
        return None
    expected = np.asarray(trained, float) * (1.0 if model.guide_channels else np.asarray(model.scale, float))
    got = np.asarray(spacing, float)
    if np.any(expected <= 0) or np.any(got <= 0):
        return None
    size = float(np.max(np.maximum(got / expected, expected / got)))
    shape = (got.max() / got.min()) / (expected.max() / expected.min())
    if max(size, shape, 1 / shape) <= factor:
        return None
    fmt = "x".join(f"{v:.3g}" for v in got)
    want = "x".join(f"{v:.3g}" for v in expected)
    return (
        f"{source}: its voxels are {fmt} but the model expects about {want} (its training data at "
        f"scale {list(model.scale)}): results may be poor; resample the input or train on similar data"
    )


def _provenance(model: LoadedModel, *, tta: bool, consistency: bool) -> dict[str, Any]:
    net = model.config["network"]
    return {
        "software": f"aesr-sci {__version__}",
        "operation": "upscale",
        "model": str(model.path),
        "network": net.get("name"),
        "scale": list(model.scale),
        "grid_convention": model.convention,
        "degradation": model.config["degradation"].get("method"),
        "tta": tta,
        "consistency": consistency,
    }


def interactive() -> bool:
    """True in a terminal or a notebook: where progress bars are shown by default."""
    import sys

    return "ipykernel" in sys.modules or bool(getattr(sys.stderr, "isatty", lambda: False)())


def upscale(
    image: Any,
    model: LoadedModel | str | os.PathLike[str],
    *,
    patch_size: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    memory_budget: float | None = None,
    tta: bool = False,
    consistency: bool = False,
    statistics: dict[str, Any] | None = None,
    progress: bool | None = None,
    affine: Any = None,
    crs: Any = None,
    bands: Sequence[int | str] | str | None = None,
    nodata: float | None = None,
    guide: Any = None,
    guide_statistics: dict[str, Any] | None = None,
) -> Any:
    """Super-resolve an image with a trained model; the result carries its new metadata.

    Parameters
    ----------
    image
        An :class:`~aesr_sci.spatial.Image`, a NIfTI/GeoTIFF path, a numpy array with ``affine``
        (channel first), a nibabel image, an open rasterio dataset or an xarray ``DataArray`` with
        rioxarray metadata; the result is of the same kind (see :mod:`aesr_sci.io.objects`).
    model
        A :class:`~aesr_sci.checkpoint.LoadedModel`, a run directory or a ``model.json``.
    patch_size
        Window core in input voxels; default: the largest windows that fit ``memory_budget`` (one
        whole-image pass when it fits); ``0`` for whole-image inference. Tiled and whole-image
        results are equal to float32 rounding (see :func:`predict`).
    device
        ``cpu``, ``cuda``...; default CUDA when available.
    precision
        ``auto`` (bfloat16 with channels-last on CUDA and on CPUs with native bfloat16, else
        float32), ``float32``, ``bfloat16`` or ``float16``; global parts stay in float32.
    memory_budget
        Bytes the windows may use; default half the memory available.
    tta
        Average over flips and in-plane 90-degree rotations (never across an anisotropic axis).
    consistency
        Project the output so that the model's degradation applied to it reproduces the input.
    statistics
        Normalisation statistics to use instead of fitting them on ``image`` (a streamed raster's
        blocks use the statistics of the whole raster).
    progress
        Show a progress bar; default: in a terminal or a notebook.
    affine, crs
        For a numpy array: a volume's 4x4 voxel-to-world matrix, or a raster's rasterio
        ``Affine`` transform and its CRS.
    bands, nodata
        Rasters: the bands to use, by 1-based number or description, and a fill value the data
        does not flag (see :func:`aesr_sci.io.read`).
    guide
        For a guided model: its guide, as a path, an :class:`~aesr_sci.spatial.Image`, a nibabel
        image, an open rasterio dataset or an xarray ``DataArray`` (anything that carries its own
        grid), or a list of them finest first (joined by :func:`aesr_sci.guide.join_guides`, as in
        training). The output then lies exactly on the first guide's grid (its transform or
        affine, CRS and size, cropped at the far end to whole target pixels) with the input's band
        names, dtype and nodata; a pixel is nodata where the input or the guide is.
    guide_statistics
        The guide's normalisation statistics, instead of fitting them on ``guide``.

    Returns
    -------
    Image or the kind given
        Float32 data in the input's units, ``meta.dtype`` kept (the writer rounds and clips
        integers), affine zoomed by the model's scale under its grid convention (or the guide's
        grid), mask upsampled; as the same kind of object as ``image`` (an ``Image`` for a path).

    Raises
    ------
    MismatchError
        If the model and the input do not fit (bands, dimensionality, slice axis), or for an
        unknown ``precision``; a guided model without its guide, a guide for a model that takes
        none, a guide with other bands, or off the input's grid (:func:`aesr_sci.guide.check_guide`).
        A single-band model is applied to each band of a multiband input in turn.

    Examples
    --------
    >>> out = upscale("t1_2mm.nii.gz", "runs/mri_x2")  # doctest: +SKIP
    >>> out.meta.spacing  # doctest: +SKIP
    (1.0, 1.0, 1.0)
    """
    from .io import from_image, to_image

    source = str(image) if isinstance(image, (str, os.PathLike)) else "input"
    img, kind = to_image(image, affine=affine, crs=crs, bands=bands, nodata=nodata)
    progress = interactive() if progress is None else progress
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    check_fit(loaded, img, source)
    img, guide_img, grid = _with_guide(loaded, img, guide)
    dev = select_device(device)
    resolve_precision(precision, dev)  # an unknown value fails before any work
    run = {"device": dev, "precision": precision, "memory_budget": memory_budget}
    if loaded.config.get("selfsr"):
        return from_image(_upscale_thick(img, loaded, source, tta=tta, consistency=consistency, **run), kind)
    run.update(patch_size=_patch_size(patch_size, loaded, img), tta=tta, consistency=consistency)
    meta = _output_meta(loaded, img.meta, grid, tta=tta, consistency=consistency)
    if img.mask is not None and not img.mask.any():  # nothing valid: all nodata out, nothing invented
        log.warning("Warning: %s: every pixel is nodata; the output is all nodata", source)
        return from_image(_all_nodata(img, meta, loaded.scale), kind)
    out = _normalised_pass(loaded, img, guide_img, statistics, guide_statistics, progress=progress, **run)
    return from_image(Image(out, meta, mask=_output_mask(img, guide_img, loaded.scale)), kind)


def _patch_size(patch_size: int | Sequence[int] | None, loaded: LoadedModel, img: Image) -> Any:
    """The window core :func:`predict` takes: ``patch_size`` per axis, the model's own when not
    given, the whole image for ``0``."""
    if patch_size == 0:
        return tuple(img.spatial_shape)
    return _as_tuple(patch_size, loaded.spatial_dims) if patch_size else loaded.patch_size


def _output_meta(loaded: LoadedModel, meta: Any, grid: Any, *, tta: bool, consistency: bool) -> Any:
    """The output's metadata: ``meta`` zoomed by the model's scale under its grid convention (or the
    guide's grid), with the run's provenance."""
    out = meta.zoom(loaded.scale, convention=loaded.convention) if grid is None else grid.meta
    return out.with_provenance(**_provenance(loaded, tta=tta, consistency=consistency))


def _all_nodata(img: Image, meta: Any, scale: Sequence[int]) -> Image:
    """The output of an input without a valid pixel: zeros, all of them nodata."""
    shape = (img.channels, *(n * s for n, s in zip(img.spatial_shape, scale)))
    return Image(np.zeros(shape, np.float32), meta, mask=np.zeros(shape[1:], bool))


def _output_mask(img: Image, guide: Image | None, scale: Sequence[int]) -> np.ndarray | None:
    """The output's validity: the input's mask upsampled, and nodata where the guide has nodata."""
    mask = _hr_mask(img.mask, scale)
    if guide is not None and guide.common_mask is not None:  # nodata in either input stays nodata
        mask = guide.common_mask if mask is None else mask & guide.common_mask
    return mask


def _normalised_pass(
    loaded: LoadedModel,
    img: Image,
    guide: Image | None,
    statistics: dict[str, Any] | None,
    guide_statistics: dict[str, Any] | None,
    **options: Any,
) -> np.ndarray:
    """The network's output for ``img`` (and its guide) in the input's units: normalised with
    ``statistics`` (default fitted on ``img``), nodata filled, run by :func:`_run_network` with
    ``options``, the normalisation inverted."""
    from .data.normalize import Normalizer, fit_statistics

    normalizer = Normalizer.from_dict(loaded.normalization)
    data = np.asarray(img.data, dtype=np.float32)
    if statistics is None:  # a streamed raster passes the whole raster's statistics
        statistics = fit_statistics(data, img.mask, normalizer=normalizer, **loaded.statistics)
    x = fill_nodata(np.asarray(normalizer.apply(data, statistics), dtype=np.float32), img.mask)
    xt = torch.from_numpy(np.ascontiguousarray(x))[None]
    gt = None if guide is None else _guide_tensor(loaded, guide, normalizer, guide_statistics)
    y = _run_network(loaded, xt, gt, spacing=img.meta.spacing, **options)
    return np.asarray(normalizer.invert(y[0].numpy(), statistics), dtype=np.float32)


def _run_network(
    loaded: LoadedModel,
    xt: torch.Tensor,
    gt: torch.Tensor | None,
    *,
    spacing: Sequence[float],
    tta: bool,
    consistency: bool,
    **options: Any,
) -> torch.Tensor:
    """The model's network over the normalised input ``xt`` (with its normalised guide ``gt``), by
    :func:`predict` with ``options``: with TTA and the consistency projection when asked, and a
    single-band model over every band of a multiband raster, one band at a time."""
    network = loaded.network.to(options["device"]).eval()

    def run(t: torch.Tensor, g: torch.Tensor | None = gt) -> torch.Tensor:
        return predict(network, t, guide=g, **options)

    bands = [xt] if loaded.in_channels == xt.shape[1] else list(xt.split(1, dim=1))
    outs = []
    for band in bands:
        inputs = (band,) if gt is None else (band, gt)
        yb = _apply_tta(run, inputs, loaded.scale, spacing) if tta else run(*inputs)
        if consistency:
            yb = project_consistent(yb, band, loaded.degradation)
        outs.append(yb)
    return torch.cat(outs, dim=1)


def read_guides(guide: Any) -> tuple[list[Image], list[str]]:
    """The guide images, finest first, converted as :func:`aesr_sci.io.to_image` converts the input,
    and their names for messages."""
    from .io import to_image

    if guide is None:
        return [], []
    items = list(guide) if isinstance(guide, (list, tuple)) else [guide]
    names = [str(g) if isinstance(g, (str, os.PathLike)) else f"guide {i + 1}" for i, g in enumerate(items)]
    return [to_image(g)[0] for g in items], names


def _with_guide(loaded: LoadedModel, img: Image, guide: Any) -> tuple[Image, Image | None, Any]:
    """The input and its joined guide cropped to one grid, and that :class:`~aesr_sci.guide.GuideGrid`
    (the input alone and None for an unguided model); refuses a guide that does not fit the model."""
    from .guide import check_guide_bands, crop_to_guide

    images, names = read_guides(guide)
    bands = sum(g.channels for g in images) or None
    first = names[0] if names else "guide"
    check_guide_bands(loaded.guide_channels, bands, guide_name=first, names=loaded.guide_band_names)
    if not images:
        return img, None, None
    return crop_to_guide(img, images, loaded.scale, guide_names=names)


def _guide_tensor(
    loaded: LoadedModel, guide: Image, normalizer: Any, statistics: dict[str, Any] | None
) -> torch.Tensor:
    """The guide as the network takes it: normalised with its own statistics, invalid pixels filled."""
    from .data.normalize import fit_statistics

    data = np.asarray(guide.data, dtype=np.float32)
    if statistics is None:
        statistics = fit_statistics(data, guide.mask, normalizer=normalizer, **loaded.guide_statistics)
    g = fill_nodata(np.asarray(normalizer.apply(data, statistics), dtype=np.float32), guide.mask)
    return torch.from_numpy(np.ascontiguousarray(g))[None]


# ----------------------------------------------------------------------------------- files
_SUFFIXES = (".nii", ".nii.gz", ".tif", ".tiff")


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and any(name.endswith(s) for s in _SUFFIXES)


def _plan(
    inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str]
) -> list[tuple[Path, Path]]:
    from .io import is_gdal_virtual

    ins = [Path(p) for p in inputs]
    out = Path(output)
    if any(is_gdal_virtual(p) for p in inputs):  # GDAL paths (/vsizip//abs/a.zip/b.tif) stay text
        if len(ins) > 1 or out.is_dir():
            return [(str(p), out / Path(p).name) for p in inputs]  # type: ignore[misc]
        return [(str(inputs[0]), out)]  # type: ignore[list-item]
    if len(ins) == 1 and ins[0].is_dir():
        files = sorted(p for p in ins[0].iterdir() if _is_image(p))
        if not files:
            raise FileFormatError(f"{ins[0]} holds no .nii, .nii.gz, .tif or .tiff files")
        if out.exists() and not out.is_dir():
            raise FileWriteError(f"{out} is a file: give a folder as the output of the folder {ins[0]}")
        return [(f, out / f.name) for f in files]
    for p in ins:
        if not p.exists():
            from .errors import FileReadError

            raise FileReadError(f"{p}: no such file")
    if len(ins) > 1 and out.exists() and not out.is_dir():
        raise FileWriteError(f"{out} is a file: give a folder as the output of {len(ins)} inputs")
    if len(ins) > 1 or out.is_dir():
        return [(p, out / p.name) for p in ins]
    return [(ins[0], out)]


def _check_batch(
    loaded: LoadedModel,
    plan: Sequence[tuple[Path, Path]],
    *,
    overwrite: bool,
    skip_existing: bool,
    select: dict[str, Any] | None = None,
    make_dirs: bool = False,
    guides: Sequence[Path] = (),
) -> list[tuple[Path, Path, Any, tuple[int, ...]]]:
    """Check every input and output of a batch before any work; drop outputs to skip.

    Returns ``(input, output, meta, shape)`` for each file to process.
    """
    from .fileutil import check_output
    from .io import read_meta
    from .io.bids import sidecar_path

    sources = [src for src, _ in plan] + list(guides)
    seen: dict[str, Path] = {}
    for src, dst in plan:
        key = os.path.normcase(os.path.abspath(dst))
        if key in seen:
            raise FileWriteError(
                f"{src} and {seen[key]} would both be written to {dst}: give them different names or "
                "upscale them into different folders"
            )
        seen[key] = src
    todo, warned = [], False
    for src, dst in plan:
        meta, shape = read_meta(src, **(select or {}))
        check_fit(loaded, Image(np.zeros((shape[0],) + (1,) * (len(shape) - 1), np.float32), meta), str(src))
        note = check_spacing(loaded, meta.spacing, str(src))
        if note and not warned:
            log.warning("Warning: %s", note)
            warned = True
        if skip_existing and dst.exists():
            check_output(dst, overwrite=True, inputs=sources)
            log.info("%s exists: skipped", dst)
            continue
        if dst.parent.is_dir() or (len(plan) == 1 and not make_dirs):
            check_output(dst, overwrite=overwrite, inputs=sources)
            if sidecar_path(dst) is not None:
                check_output(sidecar_path(dst), overwrite=overwrite, inputs=sources)
        todo.append((src, dst, meta, shape))
    return todo


def upscale_files(
    model: str | os.PathLike[str] | LoadedModel,
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    patch_size: int | Sequence[int] | None = None,
    device: str | None = None,
    precision: str = "auto",
    memory_budget: float | None = None,
    tta: bool = False,
    consistency: bool = False,
    cog: bool = False,
    overwrite: bool = False,
    skip_existing: bool = False,
    progress: bool = False,
    stream: bool | None = None,
    block: int = 1024,
    bands: Sequence[int | str] | str | None = None,
    nodata: float | None = None,
    dtype: str | None = None,
    bids: bool = False,
    guide: Sequence[str | os.PathLike[str]] = (),
) -> list[Path]:
    """Upscale files into files (the command line's ``upscale``); returns the written paths.

    Every input (readable, band count, dimensionality) and every output (unique names, none of them
    an input, existing files not overwritten unless asked, or skipped with ``skip_existing``) is
    checked before any work; each output is written atomically, and a failure leaves no partial
    file behind. GeoTIFFs are streamed block by block (``block`` input pixels a side, with a halo
    covering the receptive field) when ``stream`` is true, or, by default, when they hold more than
    4 Mi pixel values; peak memory then depends on ``block``, not on the raster, and the
    normalisation statistics are fitted once for the whole raster on a decimated read. ``guide``:
    a guided model's guide files (finest first) for one input, checked against it (bands, CRS,
    pixel size, corner) before any work and streamed window by window beside it. The other
    options are :func:`upscale`'s.
    ``bands`` and ``nodata`` select bands and declare fill as :func:`aesr_sci.io.read` does
    (in the streamed blocks and the whole-raster statistics too), ``dtype`` is the outputs' data
    type (default the inputs').

    Each NIfTI output gets a BIDS-style JSON sidecar (``out.json`` beside ``out.nii.gz``) with its
    provenance (see :mod:`aesr_sci.io.bids`); it is checked, written and removed with its image.
    With ``bids``, ``inputs`` is one BIDS dataset folder and ``output`` the derivative dataset:
    ``sub-01/anat/sub-01_T1w.nii.gz`` becomes ``output/sub-01/anat/sub-01_desc-superres_T1w.nii.gz``.
    """
    from tqdm.auto import tqdm

    from .io import parse_dtype

    dtype = parse_dtype(dtype)
    select = {"bands": bands, "nodata": nodata}
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    resolve_precision(precision, select_device(device))  # an unknown value fails before any work
    guides = [Path(g) for g in guide]
    checks = {"overwrite": overwrite, "skip_existing": skip_existing, "select": select}
    plan, grids = _plan_batch(loaded, inputs, output, guides, bids=bids, **checks)
    _make_output_folder(inputs, output, bids=bids, files=len(plan))
    options: dict[str, Any] = {"patch_size": patch_size, "device": device, "precision": precision}
    options.update(memory_budget=memory_budget, tta=tta, consistency=consistency)
    writing = {"cog": cog, "overwrite": overwrite, "progress": progress, "select": select, "dtype": dtype}
    files = {"stream": stream, "block": block, "root": inputs[0] if bids else None, **writing}
    bar = tqdm(plan, desc="files", disable=not progress or len(plan) < 2, unit="file")
    return [_upscale_file(loaded, item, grid, guides, options, **files) for item, grid in zip(bar, grids)]


def _plan_batch(
    loaded: LoadedModel,
    inputs: Sequence[Any],
    output: Any,
    guides: Sequence[Path],
    *,
    bids: bool,
    **checks: Any,
) -> tuple[list[tuple[Path, Path, Any, tuple[int, ...]]], list[Any]]:
    """The files of a batch to process, ``(input, output, meta, shape)``, every one checked by
    :func:`_check_batch` with ``checks``, and each one's guide grid (:func:`_check_guide_files`)."""
    pairs = _bids_pairs(inputs, output) if bids else _plan(inputs, output)
    plan = _check_batch(loaded, pairs, make_dirs=bids, guides=guides, **checks)
    grids = [_check_guide_files(loaded, src, meta, shape, guides) for src, _, meta, shape in plan]
    return plan, grids


def _upscale_file(
    loaded: LoadedModel,
    item: tuple[Path, Path, Any, tuple[int, ...]],
    grid: Any,
    guides: Sequence[Path],
    options: dict[str, Any],
    *,
    stream: bool | None,
    block: int,
    root: Any,
    **writing: Any,
) -> Path:
    """One file of a batch upscaled and written, its path returned: a GeoTIFF streamed block by
    block (with ``stream``, or by default when large), anything else read whole."""
    src, dst, meta, shape = item
    streaming = math.prod(shape) > _STREAM_VALUES if stream is None else stream
    if meta.format == "geotiff" and streaming:
        target = _Streamed(src, meta, shape, guides, grid)
        _upscale_streaming(loaded, target, dst, options, block=block, **writing)
    else:
        _upscale_in_memory(loaded, src, dst, options, guides, root=root, **writing)
    log.info("wrote %s", dst)
    return dst


def _make_output_folder(inputs: Sequence[Any], output: Any, *, bids: bool, files: int) -> None:
    """Create the output folder of a batch of ``files`` outputs (into a folder, from several inputs,
    or a BIDS derivative dataset); a BIDS one gets its ``dataset_description.json`` even when empty."""
    if files and (bids or files > 1 or Path(output).is_dir() or len(inputs) > 1):
        Path(output).mkdir(parents=True, exist_ok=True)
    if bids:
        from .io.bids import write_dataset_description

        write_dataset_description(inputs[0], output)


def _upscale_in_memory(
    loaded: LoadedModel,
    src: Path,
    dst: Path,
    options: dict[str, Any],
    guides: Sequence[Path],
    *,
    cog: bool,
    overwrite: bool,
    progress: bool,
    select: dict[str, Any],
    dtype: Any,
    root: Any,
) -> None:
    """One file read whole, upscaled (with its guide files) and written, with its sidecar if NIfTI."""
    from .io import read, write

    out = upscale(read(src, **select), loaded, progress=progress, guide=list(guides) or None, **options)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write(out, dst, overwrite=overwrite, cog=cog, dtype=dtype)
    _sidecar(dst, src, loaded, out.meta.provenance, overwrite=overwrite, root=root)


def _bids_pairs(inputs: Sequence[Any], output: Any) -> list[tuple[Path, Path]]:
    """The ``(input, output)`` pairs of a BIDS dataset folder (see :func:`aesr_sci.io.bids.bids_plan`)."""
    from .errors import ParameterError
    from .io.bids import bids_plan

    if len(inputs) != 1:
        raise ParameterError(f"--bids takes one BIDS dataset folder, got {len(inputs)} inputs")
    return bids_plan(inputs[0], output)


def _sidecar(
    dst: Path, src: Any, loaded: LoadedModel, provenance: Any, *, overwrite: bool, root: Any = None
) -> None:
    """The JSON sidecar of a NIfTI output (its source as a BIDS URI in a BIDS dataset)."""
    from .io.bids import write_output_sidecar

    uri = f"bids:raw:{Path(src).relative_to(root).as_posix()}" if root is not None else None
    write_output_sidecar(dst, provenance, source=src, model=loaded.path, overwrite=overwrite, source_uri=uri)


def _check_guide_files(
    loaded: LoadedModel, src: Path, meta: Any, shape: Sequence[int], guides: Sequence[Path]
) -> Any:
    """Check ``guides`` against the model and the input ``src`` from their metadata, before any work:
    the :class:`~aesr_sci.guide.GuideGrid` of the output, or None for an unguided model."""
    from .guide import check_guide, check_guide_bands
    from .io import read_meta

    found = [read_meta(g) for g in guides]
    bands = sum(int(gshape[0]) for _, gshape in found) or None
    first = str(guides[0]) if guides else "guide"
    check_guide_bands(loaded.guide_channels, bands, guide_name=first, names=loaded.guide_band_names)
    if not guides:
        return None
    gmeta, gshape = found[0]
    return check_guide(meta, gmeta, loaded.scale, target_shape=shape, guide_shape=gshape, guide_name=first)


def raster_statistics(
    loaded: LoadedModel,
    path: Path,
    select: dict[str, Any] | None = None,
    *,
    policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model's normalisation statistics for a whole GeoTIFF, fitted once on a decimated read
    (of the bands and with the fill that ``select`` names, as :func:`aesr_sci.io.read` takes them;
    under ``policy``, default the model's input policy)."""
    from .data.normalize import Normalizer, fit_statistics
    from .io.geotiff import read_geotiff_sample

    data, mask = read_geotiff_sample(path, max_values=_STREAM_VALUES, **(select or {}))
    normalizer = Normalizer.from_dict(loaded.normalization)
    return fit_statistics(
        np.asarray(data, dtype=np.float32), mask, normalizer=normalizer, **(policy or loaded.statistics)
    )


def _guide_statistics(loaded: LoadedModel, guides: Sequence[Path]) -> dict[str, Any] | None:
    """The joined guide's statistics from its files' decimated reads: per-band values concatenated."""
    if not guides:
        return None
    parts = [raster_statistics(loaded, g, policy=loaded.guide_statistics) for g in guides]
    return {k: [x for p in parts for x in p[k]] if isinstance(v, list) else v for k, v in parts[0].items()}


@dataclass(frozen=True)
class _Streamed:
    """A GeoTIFF to stream: its path, metadata and shape, and its guide files with their output grid."""

    path: Path
    meta: Any
    shape: Sequence[int]
    guides: Sequence[Path] = ()
    grid: Any = None  # aesr_sci.guide.GuideGrid of a guided model

    def guide_windows(self, window: Sequence[tuple[int, int]], scale: Sequence[int]) -> list[Any]:
        """Each guide file's window over the ground of the input's ``window`` (None without guides)."""
        from .guide import guide_factor
        from .io import read, read_meta

        if not self.guides:
            return []
        first = read_meta(self.guides[0])[0]
        out = []
        for g in self.guides:
            f = guide_factor(first, read_meta(g)[0])
            box = tuple((a * s // k, -(-b * s // k)) for (a, b), s, k in zip(window, scale, f))
            out.append(read(g, window=box))
        return out


def _upscale_streaming(
    loaded: LoadedModel,
    src: _Streamed,
    dst: Path,
    options: dict[str, Any],
    *,
    cog: bool,
    overwrite: bool,
    progress: bool,
    block: int = 1024,
    select: dict[str, Any] | None = None,
    dtype: Any = None,
) -> None:
    """Block-by-block upscaling of a GeoTIFF: memory depends on ``block``, not the raster.

    Each block is read with a halo that covers the network's receptive field and upscaled with the
    whole raster's statistics, so the blocks' centres stitch into the in-memory result (exactly for
    the network; the consistency projection is done per block on the haloed block, exact for block
    means and close for blurring degradations, whose projection decays within the halo). A guided
    model's guide files are read window by window too, each over the ground of the haloed block.
    """
    from tqdm.auto import tqdm

    from .io import create_geotiff

    scale = loaded.scale
    rows, cols = int(src.shape[1]), int(src.shape[2])
    if src.grid is not None:  # the output covers the common whole target pixels
        rows, cols = (b for _, b in src.grid.target_window)
    r = network_reach(loaded.network, torch.zeros(1, loaded.in_channels, 1, 1))
    halo = max(r.halo, 16)
    block = max(r.multiple, block // r.multiple * r.multiple)
    stats = raster_statistics(loaded, src.path, select)
    guide_stats = _guide_statistics(loaded, src.guides)
    out_meta = _output_meta(
        loaded, src.meta, src.grid, tta=options["tta"], consistency=options["consistency"]
    )
    out_shape = (int(src.shape[0]), rows * scale[0], cols * scale[1])
    blocks = [(r0, c0) for r0 in range(0, rows, block) for c0 in range(0, cols, block)]
    run = {"statistics": stats, "guide_statistics": guide_stats, "select": select, **options}
    with create_geotiff(dst, out_meta, out_shape, overwrite=overwrite, cog=cog, dtype=dtype) as sink:
        for r0, c0 in tqdm(blocks, desc=f"blocks of {src.path.name}", disable=not progress, unit="block"):
            core = ((r0, min(r0 + block, rows)), (c0, min(c0 + block, cols)))
            _upscale_block(loaded, src, sink, core, (rows, cols), halo, **run)


def _upscale_block(
    loaded: LoadedModel,
    src: _Streamed,
    sink: Any,
    core: Sequence[tuple[int, int]],
    extent: Sequence[int],
    halo: int,
    *,
    select: dict[str, Any] | None,
    **options: Any,
) -> None:
    """One block of a streamed raster: its ``core`` ``((r0, r1), (c0, c1))`` read with ``halo``
    pixels around it (clipped to ``extent``, the rows and columns), with its guide windows,
    upscaled by :func:`upscale` with ``options``, and the core's output written into ``sink``."""
    from .io import read

    scale = loaded.scale
    (r0, r1), (c0, c1) = core
    rows, cols = extent
    window = ((max(0, r0 - halo), min(rows, r1 + halo)), (max(0, c0 - halo), min(cols, c1 + halo)))
    (hr0, _), (hc0, _) = window
    guide = src.guide_windows(window, scale) or None
    tile = read(src.path, window=window, **(select or {}))
    up = upscale(tile, loaded, progress=False, guide=guide, **options)
    ir0, ic0 = (r0 - hr0) * scale[0], (c0 - hc0) * scale[1]
    ir1, ic1 = ir0 + (r1 - r0) * scale[0], ic0 + (c1 - c0) * scale[1]
    data = up.data[:, ir0:ir1, ic0:ic1]
    mask = None if up.mask is None else up.mask[..., ir0:ir1, ic0:ic1]
    sink.write(data, ((r0 * scale[0], r1 * scale[0]), (c0 * scale[1], c1 * scale[1])), mask=mask)
