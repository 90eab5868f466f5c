"""Inference speed against MONAI, and peak memory against raster size.

1. Output voxels per second of ``aesr_sci.upscale`` (normalisation, nodata filling, seam-free
   blending, metadata) against MONAI's ``sliding_window_inference`` called directly with the same
   network, window, overlap and batch size (Gaussian blending), on a real 3D volume and a real 2D
   multiband raster. Each is timed ``--repeats`` times, alternating, and the best time is kept.
2. Peak resident memory of ``aesr-sci upscale`` on synthetic 4-band uint16 GeoTIFFs of 1x, 4x and
   16x the pixels of a reference size, each in a fresh process, streamed block by block.

Usage::

    python benchmarks/inference.py [--data ../shared/data] [--out results.md]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _report import emit

HERE = Path(__file__).resolve().parent


def _model(spatial_dims: int, channels: int, convention: str, method: str, patch: list[int]):
    from aesr_sci.checkpoint import LoadedModel
    from aesr_sci.data.degrade import Degradation
    from aesr_sci.nets import build_model

    torch.manual_seed(0)
    net = build_model(
        "residual", spatial_dims=spatial_dims, in_channels=channels, scale=2, convention=convention
    )
    deg = Degradation(method, (2,) * spatial_dims)
    cfg = {
        "network": net.config,
        "degradation": {**deg.to_dict(), "convention": deg.convention},
        "normalization": {"method": "percentile"},
        "inference_patch": patch,
    }
    return LoadedModel(network=net.eval(), config=cfg, path=Path("benchmark"))


def _time_ours(image, model, patch, overlap, batch) -> float:
    from aesr_sci.infer import upscale

    t = time.perf_counter()
    upscale(image, model, patch_size=patch, overlap=overlap, batch_size=batch, device="cpu")
    return time.perf_counter() - t


def _time_monai(image, model, patch, overlap, batch) -> float:
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(np.asarray(image.data, np.float32))[None]
    t = time.perf_counter()
    with torch.no_grad():
        sliding_window_inference(x, patch, batch, model.network, overlap=overlap, mode="gaussian")
    return time.perf_counter() - t


def speed(data: Path, repeats: int) -> list[str]:
    from aesr_sci.data.degrade import degrade
    from aesr_sci.io import read

    cases = [
        (
            "3D MRI, BRATS pat0003 k-space x2 (120x120x77 -> 240x240x154)",
            data / "mri/brats/pat0003/T1c_subtrMeanDivStd.nii.gz",
            "kspace",
            "origin",
            [48, 48, 48],
        ),
        (
            "2D Sentinel-2 20 m, 6 bands (486x483 -> 972x966)",
            next((data / "sat/sentinel2_18SVG").glob("*_20m_*.tif")),
            "gaussian",
            "fov",
            [128, 128],
        ),
    ]
    rows = [
        "| input | window | overlap | batch | aesr-sci upscale (s) | MONAI sliding_window_inference (s) | "
        "aesr-sci output voxels/s | ratio (MONAI time / ours) |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for label, path, method, convention, patch in cases:
        hr = read(path)
        lq = degrade(hr, scale=2, method=method)
        model = _model(hr.spatial_dims, hr.channels, convention, method, patch)
        for overlap in (0.25, 0.5):
            ours, theirs = [], []
            for _ in range(repeats):
                ours.append(_time_ours(lq, model, patch, overlap, 4))
                theirs.append(_time_monai(lq, model, patch, overlap, 4))
            n_out = lq.channels * int(np.prod(lq.spatial_shape)) * 2**hr.spatial_dims
            rows.append(
                f"| {label} | {patch} | {overlap} | 4 | {min(ours):.2f} | {min(theirs):.2f} | "
                f"{n_out / min(ours):.3g} | {min(theirs) / min(ours):.2f} |"
            )
            print(rows[-1], flush=True)
    return rows


def _write_raster(path: Path, size: int) -> None:
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=4,
        dtype="uint16",
        crs="EPSG:32618",
        transform=from_origin(500000, 4200000, 20, 20),
        nodata=0,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, 512):
            h = min(512, size - r)
            block = (rng.random((4, h, size)) * 3000 + 500).astype(np.uint16)
            dst.write(block, window=((r, r + h), (0, size)))


def _child(model_dir: str, src: str, dst: str) -> None:
    from aesr_sci.infer import upscale_files

    t = time.perf_counter()
    upscale_files(model_dir, [src], dst, stream=True, block=512, patch_size=[128, 128], batch_size=4)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{time.perf_counter() - t:.2f} {peak_mb:.1f}")


def memory(reference: int) -> list[str]:
    from aesr_sci.checkpoint import save_model
    from aesr_sci.data.degrade import Degradation
    from aesr_sci.nets import build_model

    rows = [
        "| raster (4 bands, uint16) | pixels vs reference | input size | time (s) | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        net = build_model("residual", spatial_dims=2, in_channels=4, scale=2, features=16, blocks=2)
        deg = Degradation("gaussian", (2, 2))
        save_model(
            tmp / "model",
            net,
            {
                "network": net.config,
                "degradation": {**deg.to_dict(), "convention": "fov"},
                "normalization": {"method": "fixed", "scale": 1e-4},
                "inference_patch": [128, 128],
            },
        )
        for factor in (1, 2, 4):  # side x1, x2, x4 -> pixels x1, x4, x16
            size = reference * factor
            src = tmp / f"r{size}.tif"
            _write_raster(src, size)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(tmp / "model"),
                    str(src),
                    str(tmp / f"o{size}.tif"),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            seconds, peak = out.stdout.split()
            rows.append(
                f"| {size} x {size} | {factor * factor}x | {src.stat().st_size / 2**20:.0f} MB | {seconds} | {peak} |"
            )
            print(rows[-1], flush=True)
            src.unlink()
            (tmp / f"o{size}.tif").unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("AESR_SCI_DATA", HERE.parents[1] / "shared" / "data")),
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reference", type=int, default=1024, help="side of the reference raster in pixels")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    torch.set_num_threads(os.cpu_count() or 1)
    if not args.data.is_dir():
        sys.exit(f"no data folder at {args.data}: pass --data or set AESR_SCI_DATA")
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, `python benchmarks/inference.py`",
        "",
        "**Speed: aesr-sci upscale against MONAI's sliding_window_inference (residual network, defaults)**",
        "",
    ]
    lines += speed(args.data, args.repeats)
    lines += [
        "",
        f"**Peak memory of streamed upscaling (x2) against raster size, reference {args.reference}^2**",
        "",
    ]
    lines += memory(args.reference)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
