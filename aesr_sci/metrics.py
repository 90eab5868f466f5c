"""Masked image-quality metrics, interpolation baselines and the evaluation of a model.

Baselines are computed on exactly the grid the model's outputs use: high-resolution index ``j`` sits
at low-resolution coordinate ``(j + 0.5) / s - 0.5`` under the field-of-view preserving convention
and at ``j / s`` under the origin preserving one. A baseline half a voxel off would be a bug, not a
weak baseline; the tests check the positions.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .spatial import as_scale

__all__ = [
    "BASELINES",
    "evaluate",
    "format_table",
    "interpolate",
    "psnr",
    "ssim",
]

log = logging.getLogger(__name__)

BASELINES = ("nearest", "linear", "cubic", "lanczos", "fourier")


# ------------------------------------------------------------------------------------ baselines
def _positions(n_out: int, s: float, convention: str) -> np.ndarray:
    j = np.arange(n_out, dtype=np.float64)
    return (j + 0.5) / s - 0.5 if convention == "fov" else j / s


def _kernel_matrix(n_in: int, n_out: int, s: float, convention: str, method: str) -> np.ndarray:
    """A ``(n_out, n_in)`` resampling matrix for one axis, edges clamped (replicated)."""
    x = _positions(n_out, s, convention)
    if method == "nearest":
        idx = np.clip(np.floor(x + 0.5).astype(int), 0, n_in - 1)
        m = np.zeros((n_out, n_in))
        m[np.arange(n_out), idx] = 1.0
        return m
    if method == "linear":
        support, kernel = 1, lambda t: np.clip(1 - np.abs(t), 0, None)
    elif method == "lanczos":
        a = 3

        def kernel(t: np.ndarray) -> np.ndarray:
            return np.where(np.abs(t) < a, np.sinc(t) * np.sinc(t / a), 0.0)

        support = a
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(method)
    base = np.floor(x).astype(int)
    m = np.zeros((n_out, n_in))
    for k in range(-support + 1, support + 1):
        idx = base + k
        w = kernel(x - idx)
        np.add.at(m, (np.arange(n_out), np.clip(idx, 0, n_in - 1)), w)
    return m / m.sum(axis=1, keepdims=True)


def _fourier(lq: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """Zero-filled Fourier interpolation over the spatial axes of ``(C, *S)`` (origin convention)."""
    x = lq.astype(np.float64)
    for ax, m in enumerate(out_shape, start=1):
        n = x.shape[ax]
        if m == n:
            continue
        spec = np.fft.fftshift(np.fft.fft(x, axis=ax), axes=ax)
        if n % 2 == 0:  # split the shared Nyquist bin symmetrically so the result stays real
            nyq = [slice(None)] * x.ndim
            nyq[ax] = slice(0, 1)
            half = spec[tuple(nyq)] / 2
            spec = np.concatenate([half, spec[tuple(_sl(ax, 1, None, x.ndim))], half], axis=ax)
            n_eff = n + 1
        else:
            n_eff = n
        pad = [(0, 0)] * x.ndim
        start = m // 2 - n_eff // 2
        pad[ax] = (start, m - n_eff - start)
        spec = np.pad(spec, pad)
        x = np.real(np.fft.ifft(np.fft.ifftshift(spec, axes=ax), axis=ax)) * (m / n)
    return x


def _sl(ax: int, start: int | None, stop: int | None, ndim: int) -> list[slice]:
    out = [slice(None)] * ndim
    out[ax] = slice(start, stop)
    return out


def interpolate(
    lq: np.ndarray, scale: float | Sequence[float], *, convention: str = "fov", method: str = "cubic"
) -> np.ndarray:
    """Upsample a channel-first array ``(C, *S)`` onto the model's high-resolution grid.

    Parameters
    ----------
    lq
        Low-resolution array, channels first.
    scale
        Integer factor, one or per spatial axis.
    convention
        ``"fov"`` or ``"origin"`` (see :mod:`aesr_sci.spatial`).
    method
        ``nearest``, ``linear``, ``cubic`` (cubic B-spline, scipy), ``lanczos`` (Lanczos-3) or
        ``fourier`` (zero-filled DFT; the natural baseline for k-space truncated data, which uses the
        origin convention).

    Returns
    -------
    numpy.ndarray
        ``(C, *S * scale)`` float64.

    Examples
    --------
    >>> import numpy as np
    >>> interpolate(np.array([[0.0, 1.0]]), 2, convention="origin", method="linear")
    array([[0. , 0.5, 1. , 1. ]])
    """
    from scipy import ndimage

    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}: choose one of {', '.join(BASELINES)}")
    dims = lq.ndim - 1
    factors = as_scale(scale, dims)
    out_shape = [round(n * s) for n, s in zip(lq.shape[1:], factors)]
    if method == "fourier":
        return _fourier(lq, out_shape)
    x = lq.astype(np.float64)
    if method == "cubic":
        offset = [0.5 / s - 0.5 if convention == "fov" else 0.0 for s in factors]
        return np.stack(
            [
                ndimage.affine_transform(
                    c,
                    [1.0 / s for s in factors],
                    offset=offset,
                    output_shape=out_shape,
                    order=3,
                    mode="nearest",
                )
                for c in x
            ]
        )
    for ax, (m, s) in enumerate(zip(out_shape, factors), start=1):
        if s == 1:
            continue
        w = _kernel_matrix(x.shape[ax], m, s, convention, method)
        x = np.moveaxis(np.tensordot(w, np.moveaxis(x, ax, 0), axes=(1, 0)), 0, ax)
    return x


# -------------------------------------------------------------------------------------- metrics
def _mask_or_all(mask: np.ndarray | None, shape: Sequence[int]) -> np.ndarray:
    if mask is None:
        return np.ones(tuple(shape), dtype=bool)
    return np.asarray(mask, dtype=bool)


def _data_range(ref: np.ndarray, mask: np.ndarray) -> float:
    vals = ref[mask]
    rng = float(vals.max() - vals.min()) if vals.size else 0.0
    return rng if rng > 0 else 1.0


def psnr(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    data_range: float | None = None,
) -> float:
    """Peak signal-to-noise ratio over ``mask`` (``True`` = scored), in dB.

    ``data_range`` defaults to the reference's range inside the mask.

    Examples
    --------
    >>> import numpy as np
    >>> round(psnr(np.array([0.0, 1.0]), np.array([0.1, 1.0])), 2)
    23.01
    """
    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    m = _mask_or_all(mask, reference.shape)
    if not m.any():
        return float("nan")
    dr = data_range if data_range is not None else _data_range(reference, m)
    mse = float(np.mean((reference[m] - test[m]) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(dr * dr / mse)


def ssim(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    data_range: float | None = None,
) -> float:
    """Structural similarity (scikit-image), averaged over ``mask``, for 2D or 3D arrays."""
    from skimage.metrics import structural_similarity

    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    m = _mask_or_all(mask, reference.shape)
    if not m.any():
        return float("nan")
    dr = data_range if data_range is not None else _data_range(reference, m)
    win = min(7, *[n if n % 2 else n - 1 for n in reference.shape])
    if win < 3:
        return float("nan")
    _, smap = structural_similarity(reference, test, data_range=dr, full=True, win_size=win)
    return float(smap[m].mean())


def sharpness(image: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """High-frequency energy: the mean squared Laplacian over ``mask`` (2D or 3D array)."""
    from scipy import ndimage

    lap = ndimage.laplace(np.asarray(image, dtype=np.float64), mode="nearest")
    m = _mask_or_all(mask, lap.shape)
    return float(np.mean(lap[m] ** 2)) if m.any() else float("nan")


def score(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    data_range: float | None = None,
) -> dict[str, Any]:
    """PSNR and SSIM of ``(C, *S)`` arrays: the mean over channels and one value per channel."""
    per_psnr = [psnr(r, t, mask=mask, data_range=data_range) for r, t in zip(reference, test)]
    per_ssim = [ssim(r, t, mask=mask, data_range=data_range) for r, t in zip(reference, test)]
    # 1.0 = as much fine detail as the reference; interpolation is below 1, over-sharpening above
    hf = [sharpness(t, mask=mask) / max(sharpness(r, mask=mask), 1e-30) for r, t in zip(reference, test)]
    return {
        "hf_energy_ratio": float(np.mean(hf)),
        "psnr": float(np.mean(per_psnr)),
        "ssim": float(np.mean(per_ssim)),
        "psnr_per_band": per_psnr,
        "ssim_per_band": per_ssim,
    }


# ------------------------------------------------------------------------------------ evaluation
def _foreground(image: Any) -> np.ndarray:
    """Valid pixels (satellite) or foreground voxels (MRI).

    MRI foreground: voxels that differ from the background by more than 5 % of the robust
    intensity range, the background being the median of the volume's outer faces (0 for most
    scans, a negative constant for z-scored ones such as BRATS).
    """
    if image.mask is not None:
        return np.asarray(image.mask, dtype=bool)
    data = np.asarray(image.data, dtype=np.float32)
    if image.meta.format == "geotiff":
        return np.ones(data.shape[1:], dtype=bool)
    faces = np.concatenate(
        [np.moveaxis(data, ax, 1)[:, [0, -1]].reshape(data.shape[0], -1) for ax in range(1, data.ndim)],
        axis=1,
    )
    background = np.median(faces, axis=1).reshape((-1,) + (1,) * (data.ndim - 1))
    dev = np.abs(data - background).max(axis=0)
    lo, hi = np.percentile(data, [0.5, 99.5])
    if hi <= lo:
        return np.ones(dev.shape, dtype=bool)
    return dev > 0.05 * (hi - lo)


def degraded_pair(hr: Any, degradation: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """Degrade a high-resolution image for scoring: ``(lq, reference, mask)``.

    ``lq`` is the degraded :class:`~aesr_sci.spatial.Image` (no noise, no random blur), the
    reference is the high-resolution data cropped to the extent the low-resolution grid covers, and
    the mask marks the voxels that are scored (:func:`_foreground`). Training validation and
    :func:`evaluate` both use it, so they score the same thing.
    """
    from .data.degrade import degrade

    lq = degrade(hr, scale=degradation.scale, method=degradation.method, **degradation.nominal_params)
    crop = tuple(slice(0, n * s) for n, s in zip(lq.spatial_shape, degradation.scale_for(hr.spatial_dims)))
    reference = np.asarray(hr.data[(slice(None), *crop)], dtype=np.float32)
    mask = _foreground(hr.replace(data=reference, mask=None if hr.mask is None else hr.mask[crop]))
    return lq, reference, mask


def normalized_range(reference: np.ndarray, mask: np.ndarray) -> float:
    """The data range used for PSNR: of the channels' maximum, inside ``mask``."""
    return _data_range(reference.max(axis=0), mask)


def evaluate(
    model: Any,
    paths: Sequence[str | os.PathLike[str]],
    *,
    json_path: str | os.PathLike[str] | None = None,
    figures: str | os.PathLike[str] | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    baselines: Sequence[str] | None = None,
    patch_size: Sequence[int] | int | None = None,
) -> dict[str, Any]:
    """Degrade each high-resolution file with the model's own degradation, upscale it, compare.

    Parameters
    ----------
    model
        A run directory, a ``model.json`` path, or a :class:`aesr_sci.checkpoint.LoadedModel`.
    paths
        High-resolution NIfTI or GeoTIFF files (held out from training).
    json_path
        Write the report as JSON here.
    figures
        Write one PNG panel per file here: input, best baseline, model, reference, two error maps.
    baselines
        Interpolation baselines to compare with; default nearest, linear, cubic, lanczos, plus
        fourier for k-space models.

    Returns
    -------
    dict
        ``{"model": ..., "files": [{"path", "model": {...}, "baselines": {name: {...}}, ...}],
        "mean": {...}}``; each score has ``psnr``, ``ssim``, per-band values, ``hf_energy_ratio``
        (mean squared Laplacian against the reference's: 1 means as much fine detail), and for the
        model a ``consistency`` error (degrade the output again and compare with the input).
    """
    from .checkpoint import LoadedModel, load_model
    from .errors import FileWriteError
    from .fileutil import check_output

    if not paths:
        raise ValueError("give at least one high-resolution file to evaluate on")
    if json_path is not None:
        check_output(json_path, overwrite=overwrite)
    fig_dir = Path(figures) if figures is not None else None
    fig_targets = [fig_dir / n for n in figure_names(paths)] if fig_dir is not None else []
    if fig_dir is not None:  # refuse before any work, not after the first file
        if fig_dir.is_dir():
            for target in fig_targets:
                check_output(target, overwrite=overwrite)
        elif fig_dir.exists():
            raise FileWriteError(f"{fig_dir} is a file: give a directory for the figures")
        else:
            check_output(fig_dir)  # its parent must exist and be writable
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device="cpu")
    convention = loaded.convention
    names = (
        list(baselines) if baselines else [b for b in BASELINES if b != "fourier" or convention == "origin"]
    )
    from .data.normalize import Normalizer

    normalizer = Normalizer.from_dict(loaded.normalization)
    files: list[dict[str, Any]] = []
    made_dir = fig_dir is not None and not fig_dir.exists()
    existed = {t for t in fig_targets if t.exists()}
    try:
        if fig_dir is not None:
            fig_dir.mkdir(parents=True, exist_ok=True)
        for path, fig_target in zip(paths, fig_targets or [None] * len(paths)):
            files.append(
                _evaluate_file(
                    path, loaded, names, normalizer, device, patch_size, progress, fig_target, overwrite
                )
            )
    except BaseException:  # leave no partial output: the figures this call created go too
        for target in fig_targets:
            if target not in existed:
                target.unlink(missing_ok=True)
        if made_dir and fig_dir is not None and fig_dir.is_dir() and not any(fig_dir.iterdir()):
            fig_dir.rmdir()
        raise
    mean: dict[str, Any] = {
        "model": {
            k: float(np.mean([f["model"][k] for f in files]))
            for k in ("psnr", "ssim", "consistency", "hf_energy_ratio")
        },
        "baselines": {
            n: {
                k: float(np.mean([f["baselines"][n][k] for f in files]))
                for k in ("psnr", "ssim", "hf_energy_ratio")
            }
            for n in names
        },
    }
    best = max(mean["baselines"], key=lambda k: mean["baselines"][k]["psnr"])
    mean["best_baseline"] = best
    mean["gain_db"] = mean["model"]["psnr"] - mean["baselines"][best]["psnr"]
    report = {
        "model": str(loaded.path),
        "scale": list(loaded.scale),
        "degradation": loaded.config["degradation"],
        "files": files,
        "mean": mean,
    }
    if json_path is not None:
        from .checkpoint import write_json

        write_json(json_path, report, overwrite=overwrite)
    return report


def _evaluate_file(
    path: Any,
    loaded: Any,
    names: list[str],
    normalizer: Any,
    device: str | None,
    patch_size: Any,
    progress: bool,
    fig_target: Path | None,
    overwrite: bool,
) -> dict[str, Any]:
    """Score the model and the baselines on one high-resolution file (see :func:`evaluate`)."""
    from .data.degrade import degrade
    from .infer import check_fit, upscale
    from .io import read

    deg = loaded.degradation
    convention = loaded.convention
    hr = read(path)
    check_fit(loaded, hr, str(path), thick_slices=False)  # before degrading it with the model's scale
    lq, ref32, fg = degraded_pair(hr, deg)
    ref = ref32.astype(np.float64)
    hr_shape = ref.shape[1:]
    out = upscale(lq, loaded, device=device, patch_size=patch_size, progress=progress)
    pred = np.asarray(out.data, dtype=np.float64)
    # score in normalised units so PSNR is comparable across files and domains
    stats = normalizer.fit(np.asarray(lq.data, dtype=np.float32), mask=lq.mask)

    def norm(a: np.ndarray, stats: Any = stats) -> np.ndarray:
        return np.asarray(normalizer.apply(a.astype(np.float32), stats), dtype=np.float64)

    ref_n = norm(ref)
    rng = normalized_range(ref_n, fg)
    entry: dict[str, Any] = {
        "path": str(path),
        "shape": list(hr_shape),
        "model": score(ref_n, norm(pred), mask=fg, data_range=rng),
    }
    # consistency: degrade the output again, compare with the input (relative RMS)
    again = degrade(out.replace(mask=None), scale=loaded.scale, method=deg.method, **deg.nominal_params)
    diff = np.asarray(again.data, np.float64) - np.asarray(lq.data, np.float64)
    denom = float(np.sqrt(np.mean(np.asarray(lq.data, np.float64) ** 2))) or 1.0
    entry["model"]["consistency"] = float(np.sqrt(np.mean(diff**2)) / denom)
    base_arrays: dict[str, np.ndarray] = {}
    entry["baselines"] = {}
    lq_data = np.asarray(lq.data, dtype=np.float64)
    for name in names:
        up = interpolate(lq_data, loaded.scale, convention=convention, method=name)
        base_arrays[name] = up
        entry["baselines"][name] = score(ref_n, norm(up), mask=fg, data_range=rng)
    best = max(entry["baselines"], key=lambda k: entry["baselines"][k]["psnr"])
    entry["best_baseline"] = best
    entry["gain_db"] = entry["model"]["psnr"] - entry["baselines"][best]["psnr"]
    if fig_target is not None:
        entry["figure"] = str(
            _figure(
                fig_target,
                Path(path),
                lq_data,
                base_arrays[best],
                pred,
                ref,
                fg,
                best,
                entry,
                overwrite,
            )
        )
    log.info(
        "%s: model %.2f dB, %s %.2f dB",
        path,
        entry["model"]["psnr"],
        best,
        entry["baselines"][best]["psnr"],
    )
    return entry


def figure_names(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """One PNG name per file, unique even when files share a name in different folders.

    ``pat0006/T1c.nii.gz`` and ``pat0007/T1c.nii.gz`` (the BRATS layout) become
    ``pat0006_T1c.png`` and ``pat0007_T1c.png``; a file whose name is unique keeps its stem.
    """
    stems = [Path(p).name.split(".")[0] for p in paths]
    names = [
        f"{Path(p).parent.name}_{s}" if stems.count(s) > 1 and Path(p).parent.name else s
        for p, s in zip(paths, stems)
    ]
    return [f"{i:03d}_{n}.png" if names.count(n) > 1 else f"{n}.png" for i, n in enumerate(names)]


def _figure(
    target: Path,
    path: Path,
    lq: np.ndarray,
    baseline: np.ndarray,
    pred: np.ndarray,
    ref: np.ndarray,
    fg: np.ndarray,
    best: str,
    entry: dict[str, Any],
    overwrite: bool,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileutil import atomic_output

    # the slice (last axis) with the most foreground, where the differences matter
    k_hr = int(np.argmax(fg.sum(axis=(0, 1)))) if fg.ndim == 3 else 0

    def cut(a: np.ndarray) -> np.ndarray:
        a = a[0] if a.ndim == ref.ndim else a  # first channel
        return np.rot90(a[:, :, k_hr]) if a.ndim == 3 else a

    factors = [round(h / low) for h, low in zip(ref.shape[1:], lq.shape[1:])]
    up = lq[0]
    for ax, f in enumerate(factors[:2]):  # nearest-neighbour display of the input on the same grid
        up = np.repeat(up, f, axis=ax)
    lq2 = np.rot90(up[:, :, min(k_hr // factors[2], up.shape[2] - 1)]) if lq.ndim == 4 else up
    ref2, base2, pred2 = cut(ref), cut(baseline), cut(pred)
    vmin, vmax = np.percentile(ref2, [0.5, 99.5])
    err_max = float(np.percentile(np.abs(base2 - ref2), 99.5)) or 1.0
    fig, axes = plt.subplots(2, 3, figsize=(12, 8), layout="constrained")
    panels = [
        (lq2, "input (low resolution)", "gray", vmin, vmax),
        (base2, f"{best} ({entry['baselines'][best]['psnr']:.2f} dB)", "gray", vmin, vmax),
        (pred2, f"model ({entry['model']['psnr']:.2f} dB)", "gray", vmin, vmax),
        (ref2, "reference (high resolution)", "gray", vmin, vmax),
        (np.abs(base2 - ref2), f"|{best} - reference|", "magma", 0, err_max),
        (np.abs(pred2 - ref2), "|model - reference|", "magma", 0, err_max),
    ]
    for ax, (img, title, cmap, lo, hi) in zip(axes.flat, panels):
        im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(path.name)
    with atomic_output(target, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return target


def format_table(report: dict[str, Any]) -> str:
    """The evaluation report as a plain-text table: one row per file and a mean row."""
    files = report["files"]
    names = list(report["mean"]["baselines"])
    header = (
        f"{'file':<34} {'model PSNR':>10} {'SSIM':>6} "
        + " ".join(f"{n:>9}" for n in names)
        + f" {'gain dB':>8}"
    )
    lines = [header, "-" * len(header)]

    def row(label: str, entry: dict[str, Any]) -> str:
        base = " ".join(f"{entry['baselines'][n]['psnr']:9.2f}" for n in names)
        return f"{label[-34:]:<34} {entry['model']['psnr']:10.2f} {entry['model']['ssim']:6.3f} {base} {entry['gain_db']:+8.2f}"

    for f in files:
        lines.append(row(Path(f["path"]).name, f))
    lines.append(row("mean", report["mean"]))
    lines.append(
        f"PSNR in dB (masked, normalised units); gain = model minus the best baseline "
        f"({report['mean']['best_baseline']}); consistency error {report['mean']['model']['consistency']:.2e}; "
        f"high-frequency energy vs reference: model {report['mean']['model']['hf_energy_ratio']:.2f}, "
        f"{report['mean']['best_baseline']} {report['mean']['baselines'][report['mean']['best_baseline']]['hf_energy_ratio']:.2f}"
    )
    return "\n".join(lines)


# ----------------------------------------------------------------- guided super-resolution metrics
def rmse(reference: np.ndarray, test: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """Root-mean-square error over ``mask`` (``True`` = scored), in the data's units.

    DSen2 and SEN2SR report it on reflectance x 10000 (digital numbers).

    Raises
    ------
    ValueError
        If the shapes differ.

    Examples
    --------
    >>> rmse(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 5.0]))
    1.7320508075688772
    """
    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if reference.shape != test.shape:
        raise ValueError(f"rmse: shapes differ: reference {reference.shape}, test {test.shape}")
    m = _mask_or_all(mask, reference.shape)
    if not m.any():
        return float("nan")
    return float(np.sqrt(np.mean((reference[m] - test[m]) ** 2)))


def spectral_angle(reference: np.ndarray, test: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """Spectral angle mapper (SAM): the mean angle between the spectra of each pixel, in degrees.

    Parameters
    ----------
    reference, test
        ``(C, *S)`` arrays, bands first.
    mask
        Boolean ``(*S)``, ``True`` where scored; pixels where either spectrum is zero are skipped.

    Returns
    -------
    float
        0 for identical spectra (or spectra scaled by a positive factor), 90 for orthogonal ones;
        NaN when no pixel is scored.

    Raises
    ------
    ValueError
        If the shapes differ or the arrays have no band axis.

    Examples
    --------
    >>> a = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> spectral_angle(a, 3 * a), spectral_angle(a, a[::-1])
    (0.0, 90.0)
    """
    reference = np.asarray(reference, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if reference.shape != test.shape or reference.ndim < 2:
        raise ValueError(
            f"spectral_angle: needs two (C, *S) arrays of one shape, got {reference.shape} and {test.shape}"
        )
    m = _mask_or_all(mask, reference.shape[1:])
    dot = np.sum(reference * test, axis=0)
    norms = np.linalg.norm(reference, axis=0) * np.linalg.norm(test, axis=0)
    m = m & (norms > 0)
    if not m.any():
        return float("nan")
    cosine = np.clip(dot[m] / norms[m], -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)).mean())
