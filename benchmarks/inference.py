"""Inference speed against MONAI and a whole-image pass, the matmul peak reached, and peak memory.

1. Seconds of ``aesr_sci.upscale`` (``--precision auto`` and ``float32``; normalisation, nodata
   filling, exact tiling, metadata), of MONAI's ``sliding_window_inference`` called with its
   defaults (overlap 0.25, one window per batch, constant blending) and a 32^3 / 128^2 window, and
   of one whole-image float32 forward pass of the same network, for the 3D ``mri_x2`` network
   (residual, 32 features, 6 blocks, Fourier skip) on a BRATS volume and a 2D Sentinel-2 network
   (residual, 48 features, 8 blocks) on a 6-band scene. Random weights: speed does not depend on
   them. Each is timed ``--repeats`` times, alternating, and the best time is kept.
2. Tiling overhead: ``upscale`` in float32 with a memory budget of half of what the whole image
   needs (so it must tile), against the whole-image pass.
3. The fraction of the machine's matrix-multiply peak reached: the network's multiply-adds
   (``torch.utils.flop_counter``) per second against ``torch.matmul`` of two large square matrices
   in float32 and bfloat16.
4. Peak resident memory of ``upscale_files`` on synthetic 4-band uint16 GeoTIFFs of 1x, 4x and 16x
   the pixels of a reference size, each in a fresh process, streamed block by block.

Usage::

    python benchmarks/inference.py [--data ../shared/data] [--out results.md]
    python benchmarks/inference.py --quick      # a smoke test at tiny sizes (seconds)
"""

from __future__ import annotations

import argparse
import math
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


def _model(spatial_dims: int, channels: int, convention: str, method: str, **options):
    from aesr_sci.checkpoint import LoadedModel
    from aesr_sci.data.degrade import Degradation
    from aesr_sci.nets import build_model

    torch.manual_seed(0)
    net = build_model(
        "residual", spatial_dims=spatial_dims, in_channels=channels, scale=2, convention=convention, **options
    )
    deg = Degradation(method, (2,) * spatial_dims)
    cfg = {
        "network": net.config,
        "degradation": {**deg.to_dict(), "convention": deg.convention},
        "normalization": {"method": "percentile"},
    }
    return LoadedModel(network=net.eval(), config=cfg, path=Path("benchmark"))


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _matmul_peak(n: int) -> dict[str, float]:
    """Multiply-adds per second of ``torch.matmul`` on ``n x n`` matrices, float32 and bfloat16."""
    peaks = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.rand(n, n, dtype=dtype), torch.rand(n, n, dtype=dtype)
        torch.matmul(a, b)
        best = min(_seconds(lambda a=a, b=b: torch.matmul(a, b)) for _ in range(3))
        peaks[str(dtype).split(".")[-1]] = n**3 / best
    return peaks


def _macs(net: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x)
    return counter.get_total_flops() / 2.0


def _cases(data: Path, quick: bool):
    mri = data / "mri/brats/pat0003/T1c_subtrMeanDivStd.nii.gz"
    s2 = next((data / "sat/sentinel2_18SVG").glob("*_20m_*.tif"))
    crop3, crop2 = ((96, 96, 64), (256, 256)) if quick else (None, None)
    return [
        (
            "3D MRI mri_x2 network, BRATS pat0003 k-space x2",
            mri,
            "kspace",
            "origin",
            [32] * 3,
            crop3,
            {"blocks": 6},
        ),
        (
            "2D Sentinel-2 network, 20 m, 6 bands, x2",
            s2,
            "gaussian",
            "fov",
            [128] * 2,
            crop2,
            {"features": 48},
        ),
    ]


def _time_case(lq, model, x: torch.Tensor, roi: list[int], half: float, repeats: int) -> dict[str, float]:
    """Best seconds of each way to run ``model`` over ``lq``, alternating ``repeats`` times."""
    from monai.inferers import sliding_window_inference

    from aesr_sci.infer import upscale

    net = model.network
    ways = {
        "auto": lambda: upscale(lq, model, device="cpu"),
        "float32": lambda: upscale(lq, model, device="cpu", precision="float32"),
        "monai": lambda: sliding_window_inference(x, roi, 1, net),
        "whole": lambda: net(x),
        "tiled": lambda: upscale(lq, model, device="cpu", precision="float32", memory_budget=half),
    }
    timings: dict[str, list[float]] = {k: [] for k in ways}
    with torch.no_grad():
        for way in ways.values():  # warm up: oneDNN builds its kernels on the first call
            way()
        for _ in range(repeats):
            for key, way in ways.items():
                timings[key].append(_seconds(way))
    return {k: min(v) for k, v in timings.items()}


def speed(data: Path, repeats: int, quick: bool, peaks: dict[str, float]) -> list[str]:
    from aesr_sci.data.degrade import degrade
    from aesr_sci.infer import plan_windows
    from aesr_sci.io import read
    from aesr_sci.nets.receptive import reach

    rows = [
        "| input | upscale auto (s) | upscale float32 (s) | MONAI defaults (s) | whole-image float32 pass (s) | "
        "MONAI / auto | tiling overhead float32 (windows) | % of float32 / bfloat16 matmul peak (float32, auto) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, path, method, convention, roi, crop, options in _cases(data, quick):
        hr = read(path)
        if crop is not None:
            hr = hr.replace(data=np.ascontiguousarray(hr.data[(slice(None), *(slice(0, c) for c in crop))]))
        lq = degrade(hr, scale=2, method=method)
        model = _model(hr.spatial_dims, hr.channels, convention, method, **options)
        net = model.network
        x = torch.from_numpy(np.asarray(lq.data, np.float32))[None]
        r = reach(net, spatial_dims=hr.spatial_dims, in_channels=hr.channels)
        half = r.bytes_per_voxel * math.prod(lq.spatial_shape) / 2
        windows = len(plan_windows(lq.spatial_shape, r, patch_size=None, budget=half) or [0])
        best = _time_case(lq, model, x, roi, half, repeats)
        macs = _macs(net, x)
        rows.append(
            f"| {label} ({'x'.join(map(str, lq.spatial_shape))} in) | {best['auto']:.2f} | {best['float32']:.2f} | "
            f"{best['monai']:.2f} | {best['whole']:.2f} | {best['monai'] / best['auto']:.2f} | "
            f"{100 * (best['tiled'] / best['whole'] - 1):.0f} % ({windows}) | "
            f"{100 * macs / best['float32'] / peaks['float32']:.0f} %, "
            f"{100 * macs / best['auto'] / peaks['bfloat16']:.0f} % |"
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


def _child(model_dir: str, src: str, dst: str, block: str) -> None:
    from aesr_sci.infer import upscale_files

    t = time.perf_counter()
    upscale_files(model_dir, [src], dst, block=int(block), stream=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{time.perf_counter() - t:.2f} {peak_mb:.1f}")


def memory(reference: int, block: int) -> list[str]:
    from aesr_sci.checkpoint import save_model
    from aesr_sci.data.degrade import Degradation
    from aesr_sci.nets import build_model

    rows = [
        f"| raster (4 bands, uint16) | pixels vs reference | input size | time (s) | peak RSS (MB), --block {block} |",
        "|---|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        net = build_model("residual", spatial_dims=2, in_channels=4, scale=2, features=48, blocks=8)
        deg = Degradation("gaussian", (2, 2))
        config = {
            "network": net.config,
            "degradation": {**deg.to_dict(), "convention": "fov"},
            "normalization": {"method": "percentile"},
        }
        save_model(tmp / "model", net, config)
        for factor in (1, 2, 4):  # side x1, x2, x4 -> pixels x1, x4, x16
            size = reference * factor
            src, dst = tmp / f"r{size}.tif", tmp / f"o{size}.tif"
            _write_raster(src, size)
            command = [
                sys.executable,
                __file__,
                "--child",
                str(tmp / "model"),
                str(src),
                str(dst),
                str(block),
            ]
            seconds, peak = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
            rows.append(
                f"| {size} x {size} | {factor * factor}x | {src.stat().st_size / 2**20:.0f} MB | {seconds} | {peak} |"
            )
            print(rows[-1], flush=True)
            src.unlink()
            dst.unlink()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("AESR_SCI_DATA", HERE.parents[1] / "shared" / "data")),
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reference", type=int, default=2048, help="side of the reference raster in pixels")
    parser.add_argument("--block", type=int, default=1024, help="--block of the streamed rasters")
    parser.add_argument(
        "--quick", action="store_true", help="tiny inputs and rasters, one repeat: a smoke test"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "SRC", "DST", "BLOCK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    if args.quick:
        args.repeats, args.reference, args.block = 1, 256, 128
    torch.set_num_threads(os.cpu_count() or 1)
    if not args.data.is_dir():
        sys.exit(f"no data folder at {args.data}: pass --data or set AESR_SCI_DATA")
    from aesr_sci.infer import cpu_has_bfloat16

    peaks = _matmul_peak(1024 if args.quick else 4096)
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bfloat16: {cpu_has_bfloat16()}, "
        f"`python benchmarks/inference.py{' --quick' if args.quick else ''}`",
        "",
        f"matmul peak: float32 {peaks['float32'] / 1e9:.0f} GMAC/s, bfloat16 {peaks['bfloat16'] / 1e9:.0f} GMAC/s",
        "",
        "**Speed: aesr-sci upscale against MONAI's sliding_window_inference (defaults) and one whole-image pass**",
        "",
    ]
    lines += speed(args.data, args.repeats, args.quick, peaks)
    lines += [
        "",
        f"**Peak memory of streamed upscaling (x2, Sentinel-2 network) against raster size, "
        f"reference {args.reference}^2**",
        "",
    ]
    lines += memory(args.reference, args.block)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
