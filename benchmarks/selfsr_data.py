"""Thick-slice test volumes with a known truth, for self-supervised super-resolution (issue 17).

Each ~1 mm volume is made thick-sliced along its coarsest axis (ties go to the axis nearest the
world's superior-inferior direction, as axial clinical stacks are): contiguous slices ``--factor``
times thicker, a box slice profile, on the field-of-view-preserving grid (every thick slice's centre
is the mean position of the thin slices it covers). Written beside it: the truth, cropped at the far
end of that axis to a multiple of the factor, so that the thick volume super-resolved by the factor
lands exactly on the truth's grid. Both are float32 NIfTI with exact affines.

For each volume the script checks with nibabel, on the files written, that the world coordinates of
every thick slice's centre are the mean of those of its thin slices, and reports:

* the cubic B-spline baseline (``scipy.ndimage.zoom``, order 3, on the same grid) PSNR against the
  truth over the head foreground (the bar self-supervised super-resolution must beat by 3 dB);
* the slice profile :func:`aesr_sci.selfsr.estimate_profile` measures on the thick volume, not
  told the truth (a box as wide as the thick spacing).

Usage::

    python benchmarks/selfsr_data.py OUT_DIR [--data ../shared/data] [--factor 4] [--files a.nii.gz ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _report import emit  # noqa: E402

DEFAULT_FILES = (
    "mri/myconnectome_ds000031/ds000031_sub-01_ses-006_run-001_T1w.nii.gz",
    "mri/arc_stroke_t2w/M2208_T2w_normalized.nii.gz",
    "mri/colin27/antspy_ch2.nii.gz",
)


def coarsest_axis(affine: np.ndarray) -> int:
    """The axis of largest spacing; among ties (1 %), the one nearest the world's z direction."""
    linear = np.asarray(affine)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    ties = [a for a in range(3) if spacing[a] >= 0.99 * spacing.max()]
    return max(ties, key=lambda a: abs(linear[2, a]) / spacing[a])


def foreground(truth: np.ndarray) -> np.ndarray:
    """Head foreground: voxels more than 5 % of the robust range above the background (outer faces' median)."""
    faces = np.concatenate([np.moveaxis(truth, a, 0)[[0, -1]].ravel() for a in range(truth.ndim)])
    lo, hi = np.percentile(truth, [0.5, 99.5])
    return np.abs(truth - np.median(faces)) > 0.05 * (hi - lo)


def centres_check(thick_path: Path, truth_path: Path, axis: int, factor: int) -> float:
    """Largest distance (mm) between a thick slice's centre and the mean of its thin slices' centres."""
    import nibabel as nib

    thick, truth = nib.load(thick_path), nib.load(truth_path)
    worst = 0.0
    for k in range(thick.shape[axis]):
        index = np.zeros(3)
        index[axis] = k
        thin = np.zeros((factor, 3))
        thin[:, axis] = k * factor + np.arange(factor)
        centre = nib.affines.apply_affine(thick.affine, index)
        mean = nib.affines.apply_affine(truth.affine, thin).mean(0)
        worst = max(worst, float(np.abs(centre - mean).max()))
    return worst


def make(path: Path, out: Path, factor: int) -> list[str]:
    """Write one thick volume and its truth; return the report row."""
    from scipy import ndimage

    from aesr_sci import io
    from aesr_sci.data.degrade import degrade
    from aesr_sci.metrics import psnr
    from aesr_sci.selfsr import estimate_profile, slice_geometry

    image = io.read(path)
    image = image.replace(data=np.asarray(image.data, np.float32), meta=image.meta.replace(dtype="float32"))
    axis = coarsest_axis(image.affine)
    scale = [1, 1, 1]
    scale[axis] = factor
    n = image.spatial_shape[axis] - image.spatial_shape[axis] % factor
    crop = tuple(slice(0, n) if a == axis else slice(None) for a in range(3))
    truth = image.replace(data=np.ascontiguousarray(image.data[(slice(None), *crop)]), mask=None)
    thick = degrade(truth, scale=scale, method="slice", fwhm=float(factor), profile="box")
    stem = path.name.removesuffix(".nii.gz").removesuffix(".nii")
    thick_path, truth_path = out / f"{stem}_thick{factor}.nii.gz", out / f"{stem}_truth.nii.gz"
    io.write(thick, thick_path, overwrite=True)
    io.write(truth, truth_path, overwrite=True)
    offset = centres_check(thick_path, truth_path, axis, factor)
    reference = truth.data[0]
    t0 = time.perf_counter()
    cubic = ndimage.zoom(thick.data[0], scale, order=3, mode="reflect", grid_mode=True)
    mask = foreground(reference)
    geometry = slice_geometry(thick.meta)
    profile = estimate_profile(thick, geometry)
    seconds = time.perf_counter() - t0
    return [
        f"| {stem} | {axis} | {list(reference.shape)} | {_mm(truth.meta.spacing)} | {list(thick.spatial_shape)} "
        f"| {_mm(thick.meta.spacing)} | {offset:.1e} | {psnr(reference, cubic, mask=mask):.2f} "
        f"| {profile.shape} {profile.fwhm:.2f} (truth box {geometry.fwhm:.2f}) | {seconds:.1f} |"
    ]


def _mm(spacing: tuple[float, ...]) -> str:
    return " x ".join(f"{v:.3g}" for v in spacing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out", type=Path, help="folder for the thick volumes and their truths (outside the repo)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("AESR_SCI_DATA") or HERE.parent.parent / "shared" / "data"),
    )
    parser.add_argument("--factor", type=int, default=4, help="slice thickness / thin spacing (default 4)")
    parser.add_argument("--files", nargs="+", default=list(DEFAULT_FILES), help="paths under --data")
    parser.add_argument("--report", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if args.factor < 2:
        parser.error(f"--factor must be at least 2 (got {args.factor})")
    missing = [f for f in args.files if not (args.data / f).is_file()]
    if missing:
        print(f"selfsr_data.py: {args.data / missing[0]} not found: give --data DIR", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"Thick-slice volumes, contiguous box slices x{args.factor} along the coarsest axis (field of view kept)",
        "",
        "| volume | axis | truth shape | truth mm | thick shape | thick mm | centre offset (mm) "
        "| cubic B-spline PSNR (dB) | estimated profile (fine voxels) | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.files:
        lines += make(args.data / name, args.out, args.factor)
    emit(lines, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
