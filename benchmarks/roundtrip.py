"""Read and write back every NIfTI and GeoTIFF under a data folder; check that nothing changed.

For each ``*.nii.gz`` and ``*.tif``/``*.TIF`` file: read it with :func:`aesr_sci.io.read`, write
it to a temporary folder with :func:`aesr_sci.io.write`, read the copy and compare values, dtype,
affine (and GeoTIFF transform), CRS, nodata and band names exactly. Prints one row per file and
exits with status 1 on any mismatch.

Usage::

    python benchmarks/roundtrip.py [DATA_DIR]      # default: $AESR_SCI_DATA or /work/shared/data
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from aesr_sci import io
from aesr_sci.errors import NoCRSWarning

DEFAULT_DATA = os.environ.get("AESR_SCI_DATA", "/work/shared/data")


def find_files(root: Path) -> list[Path]:
    """Every ``.nii.gz``, ``.tif`` and ``.TIF`` file under ``root``, sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith((".nii.gz", ".tif")))


def compare(path: Path, out_dir: Path) -> tuple[list[str], float, float, float]:
    """Round-trip one file; return (problems, read ms, write ms, output size / input size)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoCRSWarning)
        t0 = time.perf_counter()
        src = io.read(path, check_finite=False)
        t1 = time.perf_counter()
        out = out_dir / path.name
        io.write(src, out)
        t2 = time.perf_counter()
        back = io.read(out, check_finite=False)
    problems = []
    if back.data.dtype != src.data.dtype or back.meta.dtype != src.meta.dtype:
        problems.append(f"dtype {src.data.dtype}/{src.meta.dtype} -> {back.data.dtype}/{back.meta.dtype}")
    if back.data.shape != src.data.shape:
        problems.append(f"shape {src.data.shape} -> {back.data.shape}")
    elif not np.array_equal(back.data, src.data, equal_nan=np.issubdtype(src.data.dtype, np.floating)):
        diff = np.nanmax(np.abs(back.data.astype(np.float64) - src.data.astype(np.float64)))
        problems.append(f"values differ (max {diff:g})")
    if not np.array_equal(back.affine, src.affine):
        problems.append("affine differs")
    if src.meta.format == "geotiff" and back.meta.extra["transform"] != src.meta.extra["transform"]:
        problems.append("transform differs")
    if back.meta.crs != src.meta.crs:
        problems.append("CRS differs")
    if back.meta.nodata != src.meta.nodata and not (
        src.meta.nodata is not None and np.isnan(src.meta.nodata) and np.isnan(back.meta.nodata or 0)
    ):
        problems.append(f"nodata {src.meta.nodata} -> {back.meta.nodata}")
    if back.meta.band_names != src.meta.band_names:
        problems.append(f"band names {src.meta.band_names} -> {back.meta.band_names}")
    if (src.mask is None) != (back.mask is None) or (
        src.mask is not None and not np.array_equal(src.mask, back.mask)
    ):
        problems.append("mask differs")
    ratio = out.stat().st_size / path.stat().st_size
    out.unlink()
    return problems, 1000 * (t1 - t0), 1000 * (t2 - t1), ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=DEFAULT_DATA, type=Path)
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"data folder {args.data_dir} not found", file=sys.stderr)
        return 2
    files = find_files(args.data_dir)
    if not files:
        print(f"no .nii.gz or .tif files under {args.data_dir}", file=sys.stderr)
        return 2
    failures = 0
    width = max(len(str(p.relative_to(args.data_dir))) for p in files)
    print(f"{'file':<{width}}  ok   {'read ms':>8} {'write ms':>9} {'size':>6}")
    with tempfile.TemporaryDirectory(prefix="aesr_roundtrip_") as tmp:
        for path in files:
            problems, read_ms, write_ms, ratio = compare(path, Path(tmp))
            failures += bool(problems)
            name = str(path.relative_to(args.data_dir))
            flag = "yes" if not problems else "NO "
            print(f"{name:<{width}}  {flag} {read_ms:8.0f} {write_ms:9.0f} {ratio:6.2f}")
            for problem in problems:
                print(f"    {problem}")
    print(f"{len(files) - failures}/{len(files)} files round-trip exactly")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
