"""The evaluation of a model on held-out files: the degraded pair, the scored voxels, the report, figures.

Training validation and :func:`evaluate` score a file the same way, through :func:`held_out_case`:
the high-resolution file is degraded with the model's own degradation (no noise, no random blur),
the normalisation statistics are fitted on the degraded input as inference does, and the reference,
the scored mask (:func:`foreground`) and the PSNR peak are kept in normalised units, so that
:meth:`Case.score` gives comparable numbers across files and domains. Baselines get the same
normalised input as the network (:mod:`aesr_sci.baselines`).

Guided models are scored by Wald's protocol through :func:`held_out_guided_case`: the target and
its guide are both degraded by the scale, the reference is the target itself, and the
pansharpening baselines (:mod:`aesr_sci.pansharpen`) join the interpolation ones; the scores add
RMSE (physical units, overall and per band) and the spectral angle (SAM).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .baselines import BASELINES, upsample
from .errors import ParameterError
from .metrics import reference_range, rmse, score, spectral_angle
from .spatial import Image, SpatialMeta, axis_codes, opposite

__all__ = [
    "Case",
    "GuidedCase",
    "degraded_pair",
    "evaluate",
    "figure_names",
    "foreground",
    "format_table",
    "held_out_case",
    "held_out_guided_case",
]

log = logging.getLogger(__name__)

_MEAN_KEYS = ("psnr", "ssim", "hf_energy_ratio")
_GUIDED_KEYS = ("rmse", "sam")  # also averaged for guided models
GUIDED_BASELINES = ("cubic", "hpf", "brovey")
"""The baselines a guided model is compared with by default: bicubic and two pansharpening methods."""


# ----------------------------------------------------------------------------- the scored pair
def foreground(image: Image) -> np.ndarray:
    """The voxels that are scored: valid pixels (rasters) or foreground voxels (volumes).

    An image with a mask is scored where the mask is ``True``; a GeoTIFF without one everywhere.
    Volumes: voxels that differ from the background by more than 5 % of the robust intensity range
    (0.5 to 99.5 percentiles), the background being the median of the volume's outer faces (0 for
    most scans, a negative constant for z-scored ones such as BRATS).
    """
    if image.mask is not None:
        return np.asarray(image.common_mask, dtype=bool)
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


def degraded_pair(hr: Image, degradation: Any) -> tuple[Image, np.ndarray, np.ndarray]:
    """Degrade a high-resolution image for scoring: ``(lq, reference, mask)``.

    ``lq`` is the degraded :class:`~aesr_sci.spatial.Image` (no noise, no random blur), the
    reference is the high-resolution data (float32, physical units) cropped to the extent the
    low-resolution grid covers, and the mask marks the voxels that are scored (:func:`foreground`).
    """
    from .data.degrade import degrade

    lq = degrade(hr, scale=degradation.scale, method=degradation.method, **degradation.nominal_params)
    crop = tuple(slice(0, n * s) for n, s in zip(lq.spatial_shape, degradation.scale_for(hr.spatial_dims)))
    reference = np.asarray(hr.data[(slice(None), *crop)], dtype=np.float32)
    mask = foreground(hr.replace(data=reference, mask=None if hr.mask is None else hr.mask[(..., *crop)]))
    return lq, reference, mask


@dataclass(frozen=True, eq=False)
class Case:
    """One held-out file, ready to score predictions against; made by :func:`held_out_case`.

    Attributes
    ----------
    path
        Where the file came from (for messages and reports).
    lq
        The degraded input in physical units, with its metadata: what :func:`aesr_sci.upscale` gets.
    inputs
        ``lq`` normalised, invalid pixels filled: what the network and the baselines get, ``(C, *S)``.
    reference
        The high-resolution reference, normalised, ``(C, *S * scale)`` float32.
    mask
        The scored voxels, ``(*S * scale)`` bool.
    peak
        The PSNR data range, of the normalised reference inside the mask.
    normalizer, stats
        The normalisation and the statistics fitted on the degraded input.
    degradation
        The degradation that made ``lq`` (its grid convention places the baselines).
    meta
        The reference's metadata (orientation and spacing for figures; band names, units).
    """

    path: str
    lq: Image
    inputs: np.ndarray
    reference: np.ndarray
    mask: np.ndarray
    peak: float
    normalizer: Any
    stats: Mapping[str, Any]
    degradation: Any
    meta: SpatialMeta

    def normalize(self, data: np.ndarray) -> np.ndarray:
        """Physical units to the normalised units of the scores."""
        return np.asarray(self.normalizer.apply(np.asarray(data, np.float32), self.stats), np.float32)

    def physical(self, data: np.ndarray) -> np.ndarray:
        """Normalised units back to physical units (for figures)."""
        return np.asarray(self.normalizer.invert(np.asarray(data, np.float32), self.stats), np.float32)

    def score(self, prediction: np.ndarray) -> dict[str, Any]:
        """Scores of a normalised prediction ``(C, *S * scale)`` against the reference (see
        :func:`aesr_sci.metrics.score`)."""
        return score(self.reference, prediction, mask=self.mask, data_range=self.peak)

    @property
    def factors(self) -> tuple[int, ...]:
        """The scale factor per spatial axis."""
        return tuple(self.degradation.scale_for(self.lq.spatial_dims))

    def baseline(self, method: str, data: np.ndarray | None = None) -> np.ndarray:
        """An interpolation baseline (:func:`aesr_sci.baselines.upsample`) on the model's grid, float32:
        of the normalised input, or of ``data`` on the input's grid."""
        data = self.inputs if data is None else data
        return upsample(data, self.factors, convention=self.degradation.convention, method=method).astype(
            np.float32
        )


def held_out_case(
    hr: Image,
    degradation: Any,
    normalizer: Any,
    *,
    path: str = "",
    statistics: Mapping[str, Any] | None = None,
) -> Case:
    """Prepare a held-out high-resolution image for scoring; validation and :func:`evaluate` both use it.

    Parameters
    ----------
    hr
        The high-resolution image.
    degradation
        The model's :class:`~aesr_sci.data.degrade.Degradation`; its nominal parameters are used.
    normalizer
        The model's :class:`~aesr_sci.data.normalize.Normalizer`.
    path
        A name for messages and reports.
    statistics
        How the model fits its statistics (model.json's ``"statistics"``: the mask policy); default
        the policy of the file's format (:func:`aesr_sci.data.normalize.statistics_policy`).
    """
    from .data.normalize import fit_statistics, statistics_policy
    from .infer import fill_nodata

    lq, reference, mask = degraded_pair(hr, degradation)
    lq_data = np.asarray(lq.data, dtype=np.float32)
    # normalisation statistics: fitted on the degraded input, as at inference
    statistics = statistics or {"policy": statistics_policy(hr.meta.format)}
    stats = fit_statistics(lq_data, lq.mask, normalizer=normalizer, **statistics)
    inputs = fill_nodata(np.asarray(normalizer.apply(lq_data, stats), dtype=np.float32), lq.mask)
    ref_n = np.asarray(normalizer.apply(reference, stats), dtype=np.float32)
    peak = reference_range(ref_n, mask)
    return Case(path, lq, inputs, ref_n, mask, peak, normalizer, stats, degradation, hr.meta)


@dataclass(frozen=True, eq=False)
class GuidedCase(Case):
    """A held-out (target, guide) pair under Wald's protocol; made by :func:`held_out_guided_case`.

    Beyond :class:`Case` (whose ``lq`` is the degraded target and ``reference`` the target):

    Attributes
    ----------
    guide
        The guide degraded by the scale, in physical units: on the reference's grid.
    guide_inputs
        ``guide`` normalised with its own statistics, invalid pixels filled: what the network
        gets beside ``inputs``, ``(G, *S * scale)``.
    guide_stats
        The guide's statistics, fitted on the degraded guide.
    """

    guide: Image
    guide_inputs: np.ndarray
    guide_stats: Mapping[str, Any]

    def baseline(self, method: str, data: np.ndarray | None = None) -> np.ndarray:
        """An interpolation baseline (as :meth:`Case.baseline`), or a pansharpening one
        (``"hpf"``, ``"brovey"``: :func:`aesr_sci.pansharpen.pansharpen` of the normalised inputs
        with the normalised guide, weights fitted where the input is valid), float32."""
        from .pansharpen import METHODS as PANSHARPENING
        from .pansharpen import pansharpen

        if method not in PANSHARPENING:
            return super().baseline(method, data)
        out = pansharpen(
            self.inputs if data is None else data,
            self.guide_inputs,
            self.factors,
            method=method,
            mask=self.lq.common_mask,
            degradation=self.degradation,
        )
        return out.astype(np.float32)

    def score(self, prediction: np.ndarray) -> dict[str, Any]:
        """:meth:`Case.score` plus ``rmse`` (physical units), ``rmse_bands`` and ``sam`` (degrees)."""
        ref, pred = self.physical(self.reference), self.physical(prediction)
        return super().score(prediction) | {
            "rmse": rmse(ref, pred, mask=np.broadcast_to(self.mask, ref.shape)),
            "rmse_bands": [rmse(r, p, mask=self.mask) for r, p in zip(ref, pred)],
            "sam": spectral_angle(ref, pred, mask=self.mask),
        }


def held_out_guided_case(
    target: Image,
    guide: Image | Sequence[Image],
    degradation: Any,
    normalizer: Any,
    *,
    path: str = "",
    statistics: Mapping[str, Any] | None = None,
    guide_statistics: Mapping[str, Any] | None = None,
) -> GuidedCase:
    """Prepare a held-out (target, guide) pair by Wald's protocol, for guided validation and evaluation.

    The target is degraded as :func:`held_out_case` does; the guide is degraded by the same
    degradation, which puts it on the target's own grid; the reference is the target. Scored
    pixels are those valid in the target and in the degraded guide.

    Parameters
    ----------
    target
        The image to sharpen, at its own resolution (e.g. Sentinel-2's 20 m bands).
    guide
        Its guide on the grid finer by the scale (the 10 m bands), cropped to
        :func:`aesr_sci.guide.check_guide`'s windows; or several guides, finest first, joined by
        :func:`aesr_sci.guide.join_guides` as the training sampler joins them.
    degradation, normalizer
        The model's.
    path
        A name for messages and reports.
    statistics, guide_statistics
        How the model fits the target's and the guide's statistics (model.json's ``"statistics"``
        and ``"guide_statistics"``); the guide's default to the target's.

    Raises
    ------
    DataError
        If the guide's shape is not the target's times the scale.
    MismatchError
        If guides to join are not on nested grids.
    """
    from .data.normalize import fit_statistics, statistics_policy
    from .guide import check_guide_shape, join_guides, wald_degrade
    from .infer import fill_nodata

    guide = guide if isinstance(guide, Image) else join_guides(list(guide))
    factors = check_guide_shape(target, guide, degradation.scale_for(target.spatial_dims))
    case = held_out_case(target, degradation, normalizer, path=path, statistics=statistics)
    degraded = wald_degrade(guide, factors, method=degradation.method, **degradation.nominal_params)
    crop = tuple(slice(0, n) for n in case.reference.shape[1:])
    g_mask = degraded.common_mask
    degraded = Image(
        np.asarray(degraded.data[(slice(None), *crop)], np.float32),
        degraded.meta,
        None if g_mask is None else g_mask[crop],
    )
    policy = guide_statistics or statistics or {"policy": statistics_policy(guide.meta.format or ())}
    g_stats = fit_statistics(degraded.data, degraded.mask, normalizer=normalizer, **policy)
    g_inputs = fill_nodata(np.asarray(normalizer.apply(degraded.data, g_stats), np.float32), degraded.mask)
    mask = case.mask if degraded.mask is None else case.mask & degraded.mask
    base = {f.name: getattr(case, f.name) for f in fields(Case)}
    base |= {"mask": mask, "peak": reference_range(case.reference, mask)}
    return GuidedCase(**base, guide=degraded, guide_inputs=g_inputs, guide_stats=g_stats)


def consistency_error(output: Image, lq: Image, degradation: Any) -> float:
    """Degrade ``output`` again and compare it with the input ``lq``: relative RMS difference."""
    from .data.degrade import degrade

    again = degrade(
        output.replace(mask=None),
        scale=degradation.scale,
        method=degradation.method,
        **degradation.nominal_params,
    )
    diff = np.asarray(again.data, np.float64) - np.asarray(lq.data, np.float64)
    denom = float(np.sqrt(np.mean(np.asarray(lq.data, np.float64) ** 2))) or 1.0
    return float(np.sqrt(np.mean(diff**2)) / denom)


# ------------------------------------------------------------------------------------- evaluate
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
    bands: Sequence[int | str] | str | None = None,
    nodata: float | None = None,
    guides: Sequence[Any] | None = None,
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
        Write one PNG panel per file here: input, best baseline, model, reference, two error maps;
        volumes are cut across their thickest axis, with orientation letters at the edges.
    baselines
        Interpolation baselines to compare with; default nearest, linear, cubic, lanczos, plus
        fourier for k-space models; for guided models :data:`GUIDED_BASELINES` (cubic, and the
        ``hpf`` and ``brovey`` pansharpening of :mod:`aesr_sci.pansharpen`).
    bands, nodata
        Rasters: the bands to score, by 1-based number or description, and a fill value the files
        do not flag (see :func:`aesr_sci.io.read`).
    guides
        A guided model's guides, one per file of ``paths`` in the same order (a path, an Image or
        a list of them finest first); for a model with several guide files (the x6 Sentinel-2
        model: 10 m and 20 m), a flat list gives each file's guide files in turn. Evaluation then follows Wald's protocol
        (:func:`held_out_guided_case`): target and guide are both degraded by the scale, and
        scores add ``rmse`` (physical units), ``rmse_bands`` and ``sam`` (spectral angle, degrees).

    Returns
    -------
    dict
        ``{"model": ..., "files": [{"path", "model": {...}, "baselines": {name: {...}}, ...}],
        "mean": {...}}``; each score has ``psnr``, ``ssim``, per-band values, ``hf_energy_ratio``
        (mean squared Laplacian against the reference's: 1 means as much fine detail), and for the
        model a ``consistency`` error (degrade the output again and compare with the input).

    Raises
    ------
    ParameterError
        Before any work, for no files or an unknown baseline.
    OutputExistsError, FileWriteError
        Before any work, for an existing JSON file or figure (without ``overwrite``) or a bad path.
    MismatchError
        For a file the model cannot upscale (dimensions, bands).
    """
    from .checkpoint import LoadedModel, load_model, write_json
    from .data.normalize import Normalizer
    from .fileutil import check_output

    _check_request(paths, baselines)
    if json_path is not None:
        check_output(json_path, overwrite=overwrite)
    fig_dir, fig_targets = _figure_targets(paths, figures, overwrite)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device="cpu")
    guides = _check_guides(loaded, paths, guides)
    names = _baseline_names(loaded, baselines)
    normalizer = Normalizer.from_dict(loaded.normalization)
    run = {"device": device, "patch_size": patch_size, "progress": progress}
    select = {"bands": bands, "nodata": nodata}
    files: list[dict[str, Any]] = []
    with _figures_all_or_none(fig_dir, fig_targets):
        for path, guide, target in zip(paths, guides, fig_targets or [None] * len(paths)):
            case = _case(path, guide, loaded, normalizer, select)
            files.append(_evaluate_file(case, loaded, names, run, target, overwrite))
    report = {
        "model": str(loaded.path),
        "scale": list(loaded.scale),
        "degradation": loaded.config["degradation"],
        "files": files,
        "mean": _mean(files, names, guided=bool(loaded.guide_channels)),
        "guided": bool(loaded.guide_channels),
    }
    if json_path is not None:
        write_json(json_path, report, overwrite=overwrite)
    return report


def _check_request(paths: Sequence[Any], baselines: Sequence[str] | None) -> None:
    """Refuse, before any work, an evaluation of no files or with an unknown baseline."""
    if not paths:
        raise ParameterError("give at least one high-resolution file to evaluate on")
    from .pansharpen import METHODS as PANSHARPENING

    choices = (*BASELINES, *PANSHARPENING)
    unknown = [b for b in baselines or () if b not in choices]
    if unknown:
        raise ParameterError(f"unknown baseline(s) {', '.join(unknown)}: choose from {', '.join(choices)}")


def _baseline_names(loaded: Any, baselines: Sequence[str] | None) -> list[str]:
    """The baselines to compare with: those asked for, else the guided ones for a guided model, else
    the interpolations (fourier only for a k-space model, whose grid keeps its origin)."""
    if baselines:
        return list(baselines)
    if loaded.guide_channels:
        return list(GUIDED_BASELINES)
    return [b for b in BASELINES if b != "fourier" or loaded.convention == "origin"]


@contextlib.contextmanager
def _figures_all_or_none(fig_dir: Path | None, targets: Sequence[Path]) -> Iterator[None]:
    """Write the figures ``targets`` into ``fig_dir`` (created) all or none: the ones being replaced
    are set aside and, if the body fails, put back, the new ones removed with a folder made here."""
    made_dir = fig_dir is not None and not fig_dir.exists()
    aside = {t: t.with_name(f".{t.name}.previous") for t in targets if t.exists()}
    for target, backup in aside.items():
        os.replace(target, backup)
    try:
        if fig_dir is not None:
            fig_dir.mkdir(parents=True, exist_ok=True)
        yield
    except BaseException:  # leave no partial output: the figures this call created go, old ones return
        for target in targets:
            target.unlink(missing_ok=True)
        for target, backup in aside.items():
            os.replace(backup, target)
        if made_dir and fig_dir is not None and fig_dir.is_dir() and not any(fig_dir.iterdir()):
            fig_dir.rmdir()
        raise
    for backup in aside.values():
        backup.unlink(missing_ok=True)


def _figure_targets(
    paths: Sequence[Any], figures: str | os.PathLike[str] | None, overwrite: bool
) -> tuple[Path | None, list[Path]]:
    """The figures' folder and one PNG per file, refused before any work if they cannot be written."""
    from .errors import FileWriteError
    from .fileutil import check_output

    if figures is None:
        return None, []
    fig_dir = Path(figures)
    targets = [fig_dir / n for n in figure_names(paths)]
    if fig_dir.is_dir():
        for target in targets:
            check_output(target, overwrite=overwrite)
    elif fig_dir.exists():
        raise FileWriteError(f"{fig_dir} is a file: give a directory for the figures")
    else:
        check_output(fig_dir)  # its parent must exist and be writable
    return fig_dir, targets


def _best(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The best baseline by PSNR and the model's gain over it."""
    best = max(entry["baselines"], key=lambda k: entry["baselines"][k]["psnr"])
    return {"best_baseline": best, "gain_db": entry["model"]["psnr"] - entry["baselines"][best]["psnr"]}


def _mean(
    files: Sequence[Mapping[str, Any]], names: Sequence[str], *, guided: bool = False
) -> dict[str, Any]:
    keys = (*_MEAN_KEYS, *(_GUIDED_KEYS if guided else ()))

    def avg(scores: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {k: float(np.mean([s[k] for s in scores])) for k in keys}
        if guided:  # per band too
            for k in ("psnr_per_band", "rmse_bands"):
                out[k] = np.mean([s[k] for s in scores], axis=0).tolist()
        return out

    mean: dict[str, Any] = {
        "model": avg([f["model"] for f in files], (*keys, "consistency")),
        "baselines": {n: avg([f["baselines"][n] for f in files], keys) for n in names},
    }
    return mean | _best(mean)


def _check_guides(loaded: Any, paths: Sequence[Any], guides: Sequence[Any] | None) -> list[Any]:
    """One guide (or None) per file, refused before any work when they do not fit the model."""
    from .guide import check_guide_bands

    per_file = len(loaded.config.get("guide_factors") or [()])  # guide files per target (x6: 10 and 20 m)
    if guides and per_file > 1 and len(guides) == per_file * len(paths):  # flat, as --guide gives them
        guides = [list(guides[i : i + per_file]) for i in range(0, len(guides), per_file)]
    if guides and len(guides) != len(paths):
        each = f"{per_file} guide files per file (finest first)" if per_file > 1 else "one guide per file"
        raise ParameterError(
            f"{len(guides)} guide(s) for {len(paths)} file(s): give {each}, in the same order as the files"
        )
    # here whether a guide is given (or not) at all; its bands when it is read
    expected = loaded.guide_channels
    check_guide_bands(expected, (expected or 1) if guides else None, names=loaded.guide_band_names)
    return list(guides) if guides else [None] * len(paths)


def _case(
    path: Any, guide: Any, loaded: Any, normalizer: Any, select: Mapping[str, Any] | None = None
) -> Case:
    """The held-out case of one file: degraded by the model's degradation (with its guide by Wald's protocol)."""
    from .guide import crop_to_guide
    from .infer import check_fit, read_guides
    from .io import read

    hr = read(path, **(select or {}))
    check_fit(loaded, hr, str(path), thick_slices=False)  # before degrading it with the model's scale
    if guide is None:
        return held_out_case(hr, loaded.degradation, normalizer, path=str(path), statistics=loaded.statistics)
    images, names = read_guides(guide)
    hr, joined, _ = crop_to_guide(hr, images, loaded.scale, guide_names=names)
    return held_out_guided_case(
        hr,
        joined,
        loaded.degradation,
        normalizer,
        path=str(path),
        statistics=loaded.statistics,
        guide_statistics=loaded.guide_statistics,
    )


def _evaluate_file(
    case: Case,
    loaded: Any,
    names: list[str],
    run: Mapping[str, Any],
    fig_target: Path | None,
    overwrite: bool,
) -> dict[str, Any]:
    """Score the model and the baselines on one held-out case (see :func:`evaluate`)."""
    from .infer import upscale

    deg, path = loaded.degradation, case.path
    guided: dict[str, Any] = {}
    if isinstance(case, GuidedCase):  # the degraded guide lies on the reference's grid: its metadata says so
        guide = Image(
            case.guide.data, case.meta.replace(band_names=case.guide.meta.band_names), case.guide.mask
        )
        guided = {"guide": guide, "guide_statistics": case.guide_stats}
    out = upscale(case.lq, loaded, **run, **guided)
    pred = case.normalize(out.data)
    entry: dict[str, Any] = {
        "path": str(path),
        "shape": list(case.reference.shape[1:]),
        "model": case.score(pred) | {"consistency": consistency_error(out, case.lq, deg)},
    }
    ups = {name: case.baseline(name) for name in names}
    entry["baselines"] = {name: case.score(up) for name, up in ups.items()}
    entry |= _best(entry)
    best = entry["best_baseline"]
    if fig_target is not None:
        titles = (
            f"{best} ({entry['baselines'][best]['psnr']:.2f} dB)",
            f"model ({entry['model']['psnr']:.2f} dB)",
        )
        entry["figure"] = str(draw_figure(fig_target, case, ups[best], pred, titles, overwrite=overwrite))
    log.info(
        "%s: model %.2f dB, %s %.2f dB", path, entry["model"]["psnr"], best, entry["baselines"][best]["psnr"]
    )
    return entry


# -------------------------------------------------------------------------------------- figures
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


@dataclass(frozen=True)
class View:
    """How a ``(C, *S)`` array is shown as one 2D picture: which plane, and what its edges face.

    Volumes are cut across their thickest axis (the one with the largest scale factor), so the
    staircase a thick-slice model removes is in the picture; with equal factors, an axial-like cut
    along the last axis. The horizontal axis grows to the right; a volume's vertical axis grows up
    (radiological pictures), a raster's down (map pictures).
    """

    cut_axis: int | None  # None for 2D images
    index: int
    horizontal: int
    vertical: int
    edges: dict[str, str]  # "left", "right", "top", "bottom" -> orientation label
    aspect: float

    def picture(self, data: np.ndarray, channel: int = 0) -> np.ndarray:
        """The 2D picture of one channel of ``data`` ``(C, *S)``."""
        a = np.asarray(data[channel])
        if self.cut_axis is None:
            return a
        return np.rot90(np.take(a, self.index, axis=self.cut_axis))


def choose_view(meta: SpatialMeta, mask: np.ndarray, scale: Sequence[int]) -> View:
    """The :class:`View` of an image with metadata ``meta``, scored voxels ``mask`` and model ``scale``.

    The cut holds the most scored voxels. Edges carry the world directions of the axes
    (:func:`aesr_sci.spatial.axis_codes`: R/L, A/P, S/I for volumes, N/S/E/W for rasters with a
    CRS), or ``row``/``col`` for a raster without one.
    """
    dims = mask.ndim
    spacing = meta.spacing
    if dims == 2:
        codes = axis_codes(meta.affine) if meta.crs else ("row", "col")
        edges = _edges(codes, horizontal=1, vertical=0, up=False)
        return View(None, 0, 1, 0, edges, spacing[0] / spacing[1])
    scale = list(scale)
    thick = int(np.argmax(scale))
    cut = dims - 1 if len(set(scale)) == 1 else max(a for a in range(dims) if a != thick)
    horizontal, vertical = (a for a in range(dims) if a != cut)
    counts = mask.sum(axis=tuple(a for a in range(dims) if a != cut))
    edges = _edges(axis_codes(meta.affine), horizontal=horizontal, vertical=vertical, up=True)
    return View(
        cut, int(np.argmax(counts)), horizontal, vertical, edges, spacing[vertical] / spacing[horizontal]
    )


def _edges(codes: Sequence[str], *, horizontal: int, vertical: int, up: bool) -> dict[str, str]:
    if codes[0] == "row":  # no world directions: say where the indices grow
        return {"right": "col +", "bottom": "row +"}
    dims = len(codes)
    v = codes[vertical]
    return {
        "right": codes[horizontal],
        "left": opposite(codes[horizontal], dims),
        "top": v if up else opposite(v, dims),
        "bottom": opposite(v, dims) if up else v,
    }


def band_label(meta: SpatialMeta, channel: int = 0) -> tuple[str, str]:
    """The name and the units of one channel, for titles and colour bars.

    Rasters: the band description (or ``band N``) and the band's units when the file gives them,
    ``DN`` (digital numbers) otherwise, with the scale and offset that turn them into physical
    values. Volumes: ``intensity``.
    """
    names = meta.band_names
    name = names[channel] if channel < len(names) and names[channel] else f"band {channel + 1}"
    if meta.format != "geotiff":
        return (name if names else "", "intensity")
    extra = meta.extra

    def of(key: str, default: Any) -> Any:
        values = extra.get(key) or ()
        return values[channel] if channel < len(values) else default

    units, scale, offset = of("units", ""), float(of("scales", 1.0)), float(of("offsets", 0.0))
    if scale == 1.0 and offset == 0.0:
        return name, units or "DN"
    return name, f"DN ({units or 'value'} = DN x {scale:g} + {offset:g})"


def draw_figure(
    target: Path,
    case: Case,
    baseline: np.ndarray,
    prediction: np.ndarray,
    titles: tuple[str, str],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a 2 x 3 PNG panel: input, baseline, model, reference, and the two error maps.

    Drawn on its own :class:`matplotlib.figure.Figure` with the Agg canvas, so the caller's
    matplotlib backend and pyplot state are left alone. Arrays are normalised ``(C, *S * scale)``;
    the picture shows the first channel in physical units.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .fileutil import atomic_output

    view = choose_view(case.meta, case.mask, case.factors)
    lq_up = case.baseline("nearest", np.asarray(case.lq.data[:1], np.float32))
    # pixels without data (a raster's nodata) stay blank rather than show filled values
    blank = view.picture(~case.mask[None]) if case.lq.mask is not None else False
    ref, base, pred, lq = (
        np.where(blank, np.nan, view.picture(a))
        for a in (case.physical(case.reference), case.physical(baseline), case.physical(prediction), lq_up)
    )
    vmin, vmax = np.nanpercentile(ref, [0.5, 99.5])
    err_max = float(np.nanpercentile(np.abs(base - ref), 99.5)) or 1.0
    name, units = band_label(case.meta)
    panels = [
        (lq, "input (low resolution)", "gray", vmin, vmax, units),
        (base, titles[0], "gray", vmin, vmax, units),
        (pred, titles[1], "gray", vmin, vmax, units),
        (ref, "reference (high resolution)", "gray", vmin, vmax, units),
        (np.abs(base - ref), f"|{titles[0].split()[0]} - reference|", "magma", 0, err_max, units),
        (np.abs(pred - ref), "|model - reference|", "magma", 0, err_max, units),
    ]
    fig = Figure(figsize=(12, 8), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (img, title, cmap, lo, hi, label) in zip(fig.subplots(2, 3).flat, panels):
        im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest", aspect=view.aspect)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        _label_edges(ax, view.edges)
        fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    where = "" if view.cut_axis is None else f", cut at index {view.index} of axis {view.cut_axis}"
    fig.suptitle(f"{Path(case.path).name}: {name + ', ' if name else ''}{units}{where}")
    with atomic_output(target, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    return target


def _label_edges(ax: Any, edges: Mapping[str, str]) -> None:
    """Orientation letters at the middle of each edge of a picture."""
    places = {"left": (0.01, 0.5, "left", "center"), "right": (0.99, 0.5, "right", "center")}
    places |= {"top": (0.5, 0.99, "center", "top"), "bottom": (0.5, 0.01, "center", "bottom")}
    for edge, text in edges.items():
        x, y, ha, va = places[edge]
        ax.text(
            x, y, text, transform=ax.transAxes, ha=ha, va=va, color="yellow", fontsize=9, fontweight="bold"
        )


# ---------------------------------------------------------------------------------------- table
def format_table(report: dict[str, Any]) -> str:
    """The evaluation report as a plain-text table: one row per file and a mean row (for a guided
    model, one row per method and file: PSNR, SSIM, RMSE, SAM and PSNR per band)."""
    if report.get("guided"):
        return _guided_table(report)
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
    mean = report["mean"]
    best = mean["best_baseline"]
    lines.append(
        f"PSNR in dB (masked, normalised units); gain = model minus the best baseline ({best}); "
        f"consistency error {mean['model']['consistency']:.2e}; high-frequency energy vs reference: "
        f"model {mean['model']['hf_energy_ratio']:.2f}, {best} {mean['baselines'][best]['hf_energy_ratio']:.2f}"
    )
    return "\n".join(lines)


def _guided_table(report: dict[str, Any]) -> str:
    """A guided model's report: for each file and the mean, the model and each baseline in a row."""
    mean = report["mean"]
    bands = len(mean["model"]["psnr_per_band"])
    header = f"{'file':<26} {'method':<7} {'PSNR':>7} {'SSIM':>6} {'RMSE':>9} {'SAM':>6}  PSNR per band"
    lines = [header, "-" * (len(header) + 7 * max(0, bands - 2))]
    for label, entry in [*((Path(f["path"]).name, f) for f in report["files"]), ("mean", mean)]:
        for method, sc in [("model", entry["model"]), *entry["baselines"].items()]:
            per_band = " ".join(f"{v:6.2f}" for v in sc["psnr_per_band"])
            lines.append(
                f"{label[-26:]:<26} {method:<7} {sc['psnr']:7.2f} {sc['ssim']:6.3f} {sc['rmse']:9.4g} "
                f"{sc['sam']:6.2f}  {per_band}"
            )
    lines.append(
        f"Wald's protocol: target and guide degraded by {report['scale']}; PSNR in dB (masked, normalised "
        f"units), RMSE in the data's units, SAM (spectral angle) in degrees; gain over the best baseline "
        f"({mean['best_baseline']}): {mean['gain_db']:+.2f} dB"
    )
    return "\n".join(lines)
