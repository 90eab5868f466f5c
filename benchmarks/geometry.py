"""Geometry check on real files: super-resolved outputs land exactly where they should.

1. A LAS NIfTI (FSL's MNI152, 1 mm) is degraded by k-space truncation to 2 mm and upscaled back with
   an MRI x2 model. Checks: orientation kept, output voxel centres at the world positions of the
   original 1 mm voxel centres (landmarks at corners and centre), dtype, seams (tiled against
   whole-volume inference).
2. A UTM GeoTIFF with a nodata collar (rasterio's RGB test raster, uint8) is upscaled x2 by a
   single-band satellite model applied to each band. Checks: CRS, bounds, pixel corners,
   transform, dtype, nodata collar, seams.

Usage::

    python benchmarks/geometry.py MRI_MODEL SAT_MODEL [--data ../shared/data] [--out results.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def check(lines: list[str], ok: bool, what: str) -> bool:
    lines.append(f"| {'ok' if ok else 'FAIL'} | {what} |")
    print(lines[-1], flush=True)
    return ok


def nifti(model: str, data: Path, tmp: Path, lines: list[str]) -> bool:
    import nibabel as nib

    import aesr_sci
    from aesr_sci.data.degrade import degrade

    src = data / "mri/templates/antspy_mni152_fsl_1mm.nii.gz"
    hr = aesr_sci.read(src)
    lq = degrade(hr, scale=2, method="kspace")
    low = aesr_sci.write(lq, tmp / "mni_2mm.nii.gz")
    out = aesr_sci.upscale(aesr_sci.read(low), model)
    sr_path = aesr_sci.write(out, tmp / "mni_sr.nii.gz")
    sr = nib.load(sr_path)
    ok = check(
        lines,
        "".join(nib.aff2axcodes(sr.affine)) == "LAS",
        f"NIfTI orientation {''.join(nib.aff2axcodes(sr.affine))} (input LAS)",
    )
    n = np.array(out.spatial_shape) - 1
    landmarks = np.array([[0, 0, 0], n, n // 2, [n[0], 0, n[2] // 3]])
    got = out.world(landmarks)
    want = hr.world(landmarks)  # the original 1 mm grid: the output must sit exactly on it
    err = float(np.abs(got - want).max())
    ok &= check(
        lines,
        err < 1e-6,
        f"NIfTI voxel centres of {len(landmarks)} landmarks match the 1 mm grid (max error {err:.1e} mm)",
    )
    ok &= check(
        lines,
        np.allclose(sr.header.get_zooms()[:3], (1, 1, 1)),
        f"NIfTI voxel size {tuple(float(z) for z in sr.header.get_zooms()[:3])} mm",
    )
    ok &= check(
        lines, sr.get_data_dtype() == np.float32, f"NIfTI dtype {sr.get_data_dtype()} (input float32)"
    )
    whole = aesr_sci.upscale(aesr_sci.read(low), model, patch_size=0)
    diff = np.abs(whole.data - out.data) / np.ptp(whole.data)
    seam, p999 = float(diff.max()), float(np.percentile(diff, 99.9))
    # the Fourier skip of a k-space model is computed per window (a DCT over the window), so tiled and
    # whole-volume results differ slightly everywhere, not only at window edges: judge the bulk
    ok &= check(
        lines,
        p999 < 1e-2,
        f"NIfTI tiled (48^3 windows, overlap 0.25) vs whole-volume inference: 99.9th percentile of the "
        f"difference {p999:.1e} of the range, maximum {seam:.1e}, mean {float(diff.mean()):.1e}",
    )
    return ok


def geotiff(model: str, data: Path, tmp: Path, lines: list[str]) -> bool:
    import rasterio

    from aesr_sci.infer import upscale_files

    src = data / "sat/small/rasterio_RGB.byte.tif"
    (dst,) = upscale_files(model, [src], tmp / "rgb_x2.tif")
    whole_path = tmp / "rgb_x2_whole.tif"
    upscale_files(model, [src], whole_path, patch_size=0)
    with rasterio.open(src) as a, rasterio.open(dst) as b, rasterio.open(whole_path) as w:
        ok = check(lines, b.crs == a.crs, f"GeoTIFF CRS {b.crs.to_epsg()} (input {a.crs.to_epsg()})")
        err = max(abs(x - y) for x, y in zip(a.bounds, b.bounds))
        ok &= check(lines, err < 1e-6, f"GeoTIFF bounds equal the input's (max difference {err:.1e} m)")
        corners = [(0, 0), (a.height, a.width), (a.height, 0), (0, a.width)]
        diff = max(
            abs(np.array(a.xy(r, c, offset="ul")) - np.array(b.xy(2 * r, 2 * c, offset="ul"))).max()
            for r, c in corners
        )
        ok &= check(
            lines,
            diff < 1e-6,
            f"GeoTIFF pixel corners: input corner (r, c) is output corner (2r, 2c) (max {diff:.1e} m)",
        )
        ok &= check(
            lines,
            b.transform.almost_equals(a.transform * a.transform.scale(0.5)),
            "GeoTIFF transform = src.transform * Affine.scale(1/2)",
        )
        ok &= check(
            lines,
            b.dtypes == a.dtypes and b.nodata == a.nodata,
            f"GeoTIFF dtype {b.dtypes[0]}, nodata {b.nodata}",
        )
        # GDAL's dataset mask: a pixel is valid when every band is; each output pixel must be valid
        # exactly when the input pixel it lies in was
        in_valid = np.all(a.read() != a.nodata, axis=0)
        want = np.repeat(np.repeat(in_valid, 2, 0), 2, 1)
        got = np.all(b.read() != b.nodata, axis=0)
        ok &= check(
            lines,
            bool(np.all(got[~want] == False)),  # noqa: E712
            f"GeoTIFF nodata collar kept: every output pixel over input nodata is nodata ({int((~want).sum())} pixels)",
        )
        ok &= check(
            lines,
            bool(np.all(got[want])),
            f"GeoTIFF no valid pixel became nodata ({int(want.sum())} valid output pixels)",
        )
        seam = int(np.abs(b.read().astype(int) - w.read().astype(int)).max())
        ok &= check(
            lines, seam <= 2, f"GeoTIFF tiled vs whole-image inference: max difference {seam} digital numbers"
        )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mri_model")
    parser.add_argument("sat_model")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("AESR_SCI_DATA", HERE.parents[1] / "shared" / "data")),
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    lines = ["| check | what |", "|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        ok = nifti(args.mri_model, args.data, Path(tmp), lines)
        ok &= geotiff(args.sat_model, args.data, Path(tmp), lines)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
