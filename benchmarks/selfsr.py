"""Self-supervised super-resolution of thick-slice volumes with a known truth, against cubic B-spline (issue 17).

For each ``*_thick<F>.nii.gz`` that ``benchmarks/selfsr_data.py`` wrote into FOLDER (beside its
``*_truth.nii.gz``), the script runs :func:`aesr_sci.selfsr` with ``--minutes`` (training and the
final inference) and reports, inside the head foreground of the truth (as ``selfsr_data.py``
scores it):

* the PSNR of cubic B-spline interpolation on the same grid (``scipy.ndimage.zoom``, order 3);
* the PSNR of ``selfsr`` and its gain over cubic (the target: +3 dB), its wall-clock time against
  the budget (the target: within 10 %), the steps it trained and the slice profile it estimated;
* with ``--supervised DIR`` (a trained ``mri_slice_x4`` model folder), that model's PSNR too;
* with ``--oracle``, a ceiling rather than a method: the same network, trained for the same number
  of steps with the same schedule, on pairs cut from the truth's own planes across the thick axis
  (the thick volume's planes as inputs, the truth's as targets: the very pairs it is scored on),
  then applied as ``selfsr`` applies its model. What ``selfsr`` misses of it is what learning from
  the in-plane axes instead of the thick one costs; what the ceiling misses of +3 dB is what this
  network and this many steps cannot reach even told the answer.

Usage::

    python benchmarks/selfsr_data.py /tmp/thick                     # once: the volumes
    python benchmarks/selfsr.py /tmp/thick --minutes 10 [--supervised runs/mri_slice_x4] [--oracle]
    python benchmarks/selfsr.py /tmp/thick --minutes 0.1 --files antspy_ch2 --report -   # smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _report import emit  # noqa: E402
from selfsr_data import foreground  # noqa: E402


def _cubic(thick: np.ndarray, zoom: tuple[int, ...]) -> np.ndarray:
    from scipy import ndimage

    return ndimage.zoom(thick, zoom, order=3, mode="reflect", grid_mode=True)


def truth_pairs(thick, truth, geometry, profile, patch: int = 48, samples: int = 1000):
    """The oracle's pairs: :class:`aesr_sci.selfsr.InPlanePairs` of the thick volume (its
    normalisation statistics, its sampling: seeded per epoch and item, patches in the foreground,
    starts on multiples of the scale, random flips) with its planes swapped for those across the
    thick axis, the thick volume's as inputs and the truth's as targets, one stack along each
    in-plane axis (``location[-1]`` names the in-plane axis of the item's stack)."""
    from aesr_sci.selfsr import InPlanePairs

    pairs = InPlanePairs(thick, geometry, profile, patch_size=patch, samples_per_epoch=samples)
    axis = 1 + geometry.axis
    hr = np.moveaxis(np.asarray(truth.data, np.float32), axis, 1)  # (C, thick axis, A, B)
    lq = np.moveaxis(np.asarray(thick.data, np.float32), axis, 1)
    fg = foreground(hr[0])
    # per in-plane axis: planes (N, C, thick axis, the other in-plane axis), their foreground
    pairs._hr = [np.ascontiguousarray(np.moveaxis(hr, k, 0)) for k in (2, 3)]
    pairs._lq = [np.ascontiguousarray(np.moveaxis(lq, k, 0)) for k in (2, 3)]
    pairs._good = [np.moveaxis(fg, k - 1, 0) for k in (2, 3)]
    pairs._valid = [np.ones_like(g) for g in pairs._good]
    return pairs


def oracle(thick, truth, model_dir: Path, steps: int) -> np.ndarray:
    """The ceiling: ``selfsr``'s network (from its saved ``model.json``) trained afresh for ``steps``
    steps on :func:`truth_pairs`, then applied to the thick volume as ``selfsr`` applies it."""
    import torch

    from aesr_sci.checkpoint import LoadedModel, load_model
    from aesr_sci.infer import upscale
    from aesr_sci.nets import model_from_config
    from aesr_sci.selfsr import SliceProfile, slice_geometry
    from aesr_sci.training import fit

    saved = load_model(model_dir)
    profile = SliceProfile.from_dict(saved.config["selfsr"]["profile"])
    pairs = truth_pairs(thick, truth, slice_geometry(thick.meta), profile)
    torch.manual_seed(0)
    result = fit(model_from_config(saved.config["network"]), pairs, minutes=None, steps=steps)
    return upscale(thick, LoadedModel(result.network, saved.config, model_dir)).data[0]


def run(thick_path: Path, minutes: float, supervised: Path | None, with_oracle: bool = False) -> str:
    """One row of the table: cubic, selfsr (the supervised model, the oracle) against the truth."""
    if not with_oracle:
        return _row(thick_path, minutes, supervised, None)
    with tempfile.TemporaryDirectory(prefix="selfsr_model_") as folder:  # selfsr's model, for the oracle
        return _row(thick_path, minutes, supervised, Path(folder))


def _row(thick_path: Path, minutes: float, supervised: Path | None, model_dir: Path | None) -> str:
    import aesr_sci
    from aesr_sci import io
    from aesr_sci.errors import AesrError
    from aesr_sci.metrics import psnr
    from aesr_sci.selfsr import slice_geometry

    stem = thick_path.name.split("_thick")[0]
    thick, truth = io.read(thick_path), io.read(thick_path.with_name(f"{stem}_truth.nii.gz"))
    reference = np.asarray(truth.data[0], np.float32)
    mask = foreground(reference)
    geometry = slice_geometry(thick.meta)
    cubic = psnr(reference, _cubic(np.asarray(thick.data[0], np.float32), geometry.zoom), mask=mask)
    t0 = time.perf_counter()
    out = aesr_sci.selfsr(thick, minutes=minutes, save_model=model_dir)
    seconds = time.perf_counter() - t0
    if out.spatial_shape != reference.shape:
        raise SystemExit(f"{thick_path}: selfsr wrote {out.spatial_shape}, the truth is {reference.shape}")
    ours = psnr(reference, out.data[0], mask=mask)
    provenance = out.meta.provenance
    fitted = provenance.get("slice_profile") or {}
    profile = f"{fitted.get('shape')} {fitted.get('fwhm', 0):.2f} ({fitted.get('source')})" if fitted else "-"
    cells = [
        stem,
        f"{cubic:.2f}",
        f"{ours:.2f}",
        f"{ours - cubic:+.2f}",
        f"{seconds / 60:.2f} / {minutes:g}",
        str(provenance.get("steps", "-")),
        profile,
    ]
    if supervised is not None:
        try:
            sup = psnr(reference, aesr_sci.upscale(thick, supervised).data[0], mask=mask)
            cells.append(f"{sup:.2f} ({sup - cubic:+.2f})")
        except AesrError as exc:  # e.g. a thick axis the supervised model does not take
            cells.append(f"n/a ({exc})")
    if model_dir is not None:
        ceiling = psnr(reference, oracle(thick, truth, model_dir, int(provenance["steps"])), mask=mask)
        cells.append(f"{ceiling:.2f} ({ceiling - cubic:+.2f})")
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the folder benchmarks/selfsr_data.py wrote")
    parser.add_argument("--minutes", type=float, default=10.0, help="selfsr's budget per volume (default 10)")
    parser.add_argument("--supervised", type=Path, default=None, help="a trained mri_slice_x4 model folder")
    parser.add_argument("--files", nargs="+", default=None, help="volume stems to run (default: all)")
    parser.add_argument(
        "--report",
        default=str(HERE / "results" / "selfsr.md"),
        help="where to write the table ('-': print only)",
    )
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="also train the same network for the same steps on the truth's own pairs (a ceiling)",
    )
    args = parser.parse_args(argv)
    thick = sorted(args.folder.glob("*_thick*.nii.gz"))
    if args.files:
        thick = [p for p in thick if p.name.split("_thick")[0] in args.files]
    if not thick:
        print(
            f"selfsr.py: no *_thick*.nii.gz in {args.folder}: run benchmarks/selfsr_data.py first",
            file=sys.stderr,
        )
        return 2
    header = "| volume | cubic (dB) | selfsr (dB) | gain | minutes / budget | steps | slice profile (fine voxels) |"
    rule = "|---|---|---|---|---|---|---|"
    if args.supervised is not None:
        header, rule = header + " supervised (dB) |", rule + "---|"
    if args.oracle:
        header, rule = header + " oracle: trained on the truth's pairs (dB) |", rule + "---|"
    lines = [
        f"Self-supervised super-resolution (aesr-sci selfsr, {args.minutes:g} min per volume) against cubic "
        "B-spline on the same grid; PSNR inside the truth's head foreground",
        "",
        header,
        rule,
    ]
    lines += [run(path, args.minutes, args.supervised, args.oracle) for path in thick]
    emit(lines, None if args.report == "-" else Path(args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
